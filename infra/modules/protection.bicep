// Delete protection of the documents account (issue 22), deployed when main.bicep's
// PROTECT_DOCUMENTS_ACCOUNT (protectDocumentsAccount) is true, or empty in prod.
//
// A CanNotDelete management lock on the account: no one, Owner included, can delete the account or
// any of its child resources through ARM (containers, queues, the ledger table, the archive's
// retention policy while it is unlocked, role assignments at those scopes) until the lock itself is removed, which needs
// Microsoft.Authorization/locks/delete (Owner or User Access Administrator). `azd down` fails on it.
// Data-plane reads and writes are unaffected (the app and the WORM rules work as before).

@description('Documents storage account name.')
param storageAccountName string

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' existing = {
  name: storageAccountName
}

resource documentsLock 'Microsoft.Authorization/locks@2020-05-01' = {
  name: 'inqom-bridge-documents-cannot-delete'
  scope: storage
  properties: {
    level: 'CanNotDelete'
    notes: 'Holds the 10-year accounting archive (Code de commerce L123-22). Remove only after the retention duty has ended; see infra/README.md.'
  }
}

output lockId string = documentsLock.id
