// User-assigned managed identity of the function app.
// It exists before the app so that every role assignment can be created (and propagate)
// before the host starts; the same identity is used for host storage, the DocumentStorage
// trigger connection, Key Vault, Application Insights ingestion and Flex deployment storage.

@description('Name of the user-assigned managed identity.')
param name string

@description('Azure region.')
param location string

@description('Tags applied to the identity.')
param tags object = {}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: name
  location: location
  tags: tags
}

output id string = identity.id
output name string = identity.name
output principalId string = identity.properties.principalId
output clientId string = identity.properties.clientId
