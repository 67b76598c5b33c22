// Network isolation (issue 22), deployed only when main.bicep's networkIsolation is true.
//
//   VNet with two subnets:
//     app                Flex Consumption VNet integration (site virtualNetworkSubnetId). Flex requires
//                        the subnet delegated to Microsoft.App/environments (not Microsoft.Web/serverFarms
//                        as on Premium/Dedicated) and reserved for it; the app's outbound traffic to the
//                        storage accounts and the vault then goes through the VNet.
//     private-endpoints  one private endpoint per storage service the app uses and the vault:
//                        documents account blob, queue, table; host account blob, queue, table
//                        (AzureWebJobsStorage and the deployment package); Key Vault vault.
//   Private DNS zones privatelink.{blob,queue,table}.<storage suffix> and privatelink.vaultcore.azure.net,
//   linked to the VNet, with a zone group on each endpoint so the public names resolve privately.
//
// Inbound stays public on purpose: Event Grid delivers BlobCreated to the blob trigger's webhook over
// the internet (a webhook endpoint cannot be a private endpoint), and enFact pushes from outside Azure.
// Both are authenticated by keys (system key blobs_extension, function key + HMAC); see infra/README.md.

@description('Azure region (the VNet must be in the function app\'s region).')
param location string

@description('Tags applied to every resource.')
param tags object = {}

@description('Name seed (resource token).')
param resourceToken string

@description('Address space of the VNet.')
param addressPrefix string = '10.60.0.0/16'

@description('Flex integration subnet (delegated to Microsoft.App/environments; /27 or larger).')
param appSubnetPrefix string = '10.60.0.0/24'

@description('Private endpoint subnet.')
param privateEndpointSubnetPrefix string = '10.60.1.0/24'

@description('Resource id of the documents storage account.')
param storageAccountId string

@description('Resource id of the host storage account (AzureWebJobsStorage, deployment package).')
param hostStorageAccountId string

@description('Resource id of the Key Vault.')
param keyVaultId string

var storageSuffix = environment().suffixes.storage
// Private endpoint group ids: storage sub-resources and the vault (privatelink DNS zone per group).
var storageGroups = [
  'blob'
  'queue'
  'table'
]
// zone: index into storageGroups / storageZones.
var storageEndpoints = [
  {
    name: 'st-blob'
    accountId: storageAccountId
    group: 'blob'
    zone: 0
  }
  {
    name: 'st-queue'
    accountId: storageAccountId
    group: 'queue'
    zone: 1
  }
  {
    name: 'st-table'
    accountId: storageAccountId
    group: 'table'
    zone: 2
  }
  {
    name: 'sth-blob'
    accountId: hostStorageAccountId
    group: 'blob'
    zone: 0
  }
  {
    name: 'sth-queue'
    accountId: hostStorageAccountId
    group: 'queue'
    zone: 1
  }
  {
    name: 'sth-table'
    accountId: hostStorageAccountId
    group: 'table'
    zone: 2
  }
]

resource nsg 'Microsoft.Network/networkSecurityGroups@2024-05-01' = {
  name: 'nsg-${resourceToken}'
  location: location
  tags: tags
  properties: {
    securityRules: []
  }
}

resource vnet 'Microsoft.Network/virtualNetworks@2024-05-01' = {
  name: 'vnet-${resourceToken}'
  location: location
  tags: tags
  properties: {
    addressSpace: {
      addressPrefixes: [
        addressPrefix
      ]
    }
    subnets: [
      {
        name: 'app'
        properties: {
          addressPrefix: appSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          delegations: [
            {
              name: 'flex-consumption'
              properties: {
                serviceName: 'Microsoft.App/environments'
              }
            }
          ]
        }
      }
      {
        name: 'private-endpoints'
        properties: {
          addressPrefix: privateEndpointSubnetPrefix
          networkSecurityGroup: {
            id: nsg.id
          }
          privateEndpointNetworkPolicies: 'Disabled'
        }
      }
    ]
  }
}

resource appSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: 'app'
}

resource endpointSubnet 'Microsoft.Network/virtualNetworks/subnets@2024-05-01' existing = {
  parent: vnet
  name: 'private-endpoints'
}

resource storageZones 'Microsoft.Network/privateDnsZones@2020-06-01' = [for group in storageGroups: {
  name: 'privatelink.${group}.${storageSuffix}'
  location: 'global'
  tags: tags
}]

resource storageZoneLinks 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = [for (group, i) in storageGroups: {
  parent: storageZones[i]
  name: 'vnet-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}]

resource vaultZone 'Microsoft.Network/privateDnsZones@2020-06-01' = {
  name: 'privatelink.vaultcore.azure.net'
  location: 'global'
  tags: tags
}

resource vaultZoneLink 'Microsoft.Network/privateDnsZones/virtualNetworkLinks@2020-06-01' = {
  parent: vaultZone
  name: 'vnet-${resourceToken}'
  location: 'global'
  tags: tags
  properties: {
    registrationEnabled: false
    virtualNetwork: {
      id: vnet.id
    }
  }
}

resource storagePrivateEndpoints 'Microsoft.Network/privateEndpoints@2024-05-01' = [for endpoint in storageEndpoints: {
  name: 'pe-${endpoint.name}-${resourceToken}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: endpointSubnet.id
    }
    privateLinkServiceConnections: [
      {
        name: endpoint.name
        properties: {
          privateLinkServiceId: endpoint.accountId
          groupIds: [
            endpoint.group
          ]
        }
      }
    ]
  }
}]

resource storageDnsGroups 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = [for (endpoint, i) in storageEndpoints: {
  parent: storagePrivateEndpoints[i]
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: endpoint.group
        properties: {
          privateDnsZoneId: storageZones[endpoint.zone].id
        }
      }
    ]
  }
}]

resource vaultPrivateEndpoint 'Microsoft.Network/privateEndpoints@2024-05-01' = {
  name: 'pe-kv-${resourceToken}'
  location: location
  tags: tags
  properties: {
    subnet: {
      id: endpointSubnet.id
    }
    privateLinkServiceConnections: [
      {
        name: 'vault'
        properties: {
          privateLinkServiceId: keyVaultId
          groupIds: [
            'vault'
          ]
        }
      }
    ]
  }
}

resource vaultDnsGroup 'Microsoft.Network/privateEndpoints/privateDnsZoneGroups@2024-05-01' = {
  parent: vaultPrivateEndpoint
  name: 'default'
  properties: {
    privateDnsZoneConfigs: [
      {
        name: 'vault'
        properties: {
          privateDnsZoneId: vaultZone.id
        }
      }
    ]
  }
}

output vnetId string = vnet.id
output appSubnetId string = appSubnet.id
output privateEndpointSubnetId string = endpointSubnet.id
