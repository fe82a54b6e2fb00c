// The app side: identity, monitoring, storage (ledger, audit, cleanup queues, dead letters, deployment
// package) reached with the managed identity only, and the Flex Consumption Function App.
param location string
@description('Resource names (main.bicep: the overrides, or the abbreviations of abbreviations.json).')
param names resourceNames
param tags object
param responderMode string
param suppressionGroupId string
param suppressionAttribute string
param suppressOnPowerOff bool
param cleanupDelaySeconds int
param maxDeletionsPerHour int
param deviceCheckFirstDelaySeconds int
param deviceCheckWaitHours int
param deviceCheckSettleHours int
param watchedSubscriptionIds string
param reconcileSchedule string
param reconcileMaxItems int
param reconcileStaleDays int
param allowedSubscriptions string
param allowedResourceGroups string
param optOutTag string
param findingsTopicEndpoint string
param findingsTag string
param entraDsDomains string

type resourceNames = {
  identity: string
  deliveryIdentity: string
  logAnalytics: string
  applicationInsights: string
  storage: string
  plan: string
  functionApp: string
}

var cleanupQueueName = 'vm-cleanup'
var deviceCheckQueueName = 'vm-device-check'
var ledgerTableName = 'vmledger'
var auditTableName = 'responderaudit'
var deploymentContainerName = 'app-package'
var deadLetterContainerName = 'deadletter'

// Built-in role definition ids.
var roles = {
  storageBlobDataOwner: 'b7e6dc6d-f1e8-4753-8033-0f276bb0955b'
  storageBlobDataContributor: 'ba92f5b4-2d11-453d-a403-e96b0029c9fe'
  storageQueueDataContributor: '974c5e8b-45b9-4653-ba55-5f855dd0fb88'
  storageTableDataContributor: '0a9a7e1f-b9d0-4cc4-a60d-0319b160aaa3'
  monitoringMetricsPublisher: '3913510d-42f4-4e42-8a64-420c390055eb'
}

resource identity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.identity
  location: location
  tags: tags
}

// Event Grid's own identity: writes undeliverable events to the dead-letter container, nothing else.
resource deliveryIdentity 'Microsoft.ManagedIdentity/userAssignedIdentities@2023-01-31' = {
  name: names.deliveryIdentity
  location: location
  tags: tags
}

resource logs 'Microsoft.OperationalInsights/workspaces@2023-09-01' = {
  name: names.logAnalytics
  location: location
  tags: tags
  properties: {
    sku: { name: 'PerGB2018' }
    retentionInDays: 90
  }
}

resource insights 'Microsoft.Insights/components@2020-02-02' = {
  name: names.applicationInsights
  location: location
  tags: tags
  kind: 'web'
  properties: {
    Application_Type: 'web'
    WorkspaceResourceId: logs.id
    DisableLocalAuth: true // telemetry is sent with the managed identity
  }
}

resource storage 'Microsoft.Storage/storageAccounts@2023-05-01' = {
  // checkov:skip=CKV_AZURE_35: Event Grid dead-lettering and the Flex Consumption host reach the account over its public endpoint; access needs an Entra identity (shared keys are off)
  // checkov:skip=CKV_AZURE_206: ZRS is enough for operational state: the ledger is rebuilt by reconciliation, the audit table is also in Log Analytics
  // checkov:skip=CKV_AZURE_43: the name is 'stresp' + a 13-character uniqueString (or the deployer's override, which Azure validates), lower-case letters and digits
  name: names.storage
  location: location
  tags: tags
  kind: 'StorageV2'
  sku: { name: 'Standard_ZRS' }
  properties: {
    allowSharedKeyAccess: false // no keys: identities only
    allowBlobPublicAccess: false
    minimumTlsVersion: 'TLS1_2'
    supportsHttpsTrafficOnly: true
    defaultToOAuthAuthentication: true
  }
}

resource blobService 'Microsoft.Storage/storageAccounts/blobServices@2023-05-01' = {
  parent: storage
  name: 'default'
  properties: {
    deleteRetentionPolicy: { enabled: true, days: 7 }
  }
}

resource deploymentContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deploymentContainerName
}

resource deadLetterContainer 'Microsoft.Storage/storageAccounts/blobServices/containers@2023-05-01' = {
  parent: blobService
  name: deadLetterContainerName
}

resource queueService 'Microsoft.Storage/storageAccounts/queueServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource cleanupQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: cleanupQueueName
}

resource cleanupPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${cleanupQueueName}-poison'
}

resource deviceCheckQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: deviceCheckQueueName
}

resource deviceCheckPoisonQueue 'Microsoft.Storage/storageAccounts/queueServices/queues@2023-05-01' = {
  parent: queueService
  name: '${deviceCheckQueueName}-poison'
}

resource tableService 'Microsoft.Storage/storageAccounts/tableServices@2023-05-01' = {
  parent: storage
  name: 'default'
}

resource ledgerTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: ledgerTableName
}

resource auditTable 'Microsoft.Storage/storageAccounts/tableServices/tables@2023-05-01' = {
  parent: tableService
  name: auditTableName
}

resource appRoleAssignments 'Microsoft.Authorization/roleAssignments@2022-04-01' = [
  for role in [roles.storageBlobDataOwner, roles.storageQueueDataContributor, roles.storageTableDataContributor]: {
    name: guid(storage.id, identity.id, role)
    scope: storage
    properties: {
      principalId: identity.properties.principalId
      principalType: 'ServicePrincipal'
      roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', role)
    }
  }
]

resource deadLetterWriter 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(storage.id, deliveryIdentity.id, roles.storageBlobDataContributor)
  scope: deadLetterContainer
  properties: {
    principalId: deliveryIdentity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.storageBlobDataContributor)
  }
}

resource telemetryPublisher 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(insights.id, identity.id, roles.monitoringMetricsPublisher)
  scope: insights
  properties: {
    principalId: identity.properties.principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', roles.monitoringMetricsPublisher)
  }
}

resource plan 'Microsoft.Web/serverfarms@2024-04-01' = {
  // checkov:skip=CKV_AZURE_225: Flex Consumption has no zone-redundancy switch on the plan; it is set per app where the region supports it
  name: names.plan
  location: location
  tags: tags
  kind: 'functionapp'
  sku: {
    tier: 'FlexConsumption'
    name: 'FC1'
  }
  properties: {
    reserved: true
  }
}

resource functionApp 'Microsoft.Web/sites@2024-04-01' = {
  // checkov:skip=CKV_AZURE_222: Event Grid delivers to the Functions runtime webhook over the public endpoint (key-protected by the platform)
  // checkov:skip=CKV_AZURE_17: no HTTP-triggered functions: there is nothing for client certificates to protect
  // checkov:skip=CKV_AZURE_212: Flex Consumption scales from zero on events; failover is Event Grid's retries and the queue
  // checkov:skip=CKV_AZURE_213: no HTTP endpoint to probe; failures surface as Event Grid retries, dead letters and poison messages
  name: names.functionApp
  location: location
  tags: union(tags, { 'azd-service-name': 'responder' })
  kind: 'functionapp,linux'
  identity: {
    type: 'UserAssigned'
    userAssignedIdentities: { '${identity.id}': {} }
  }
  properties: {
    serverFarmId: plan.id
    httpsOnly: true
    siteConfig: {
      minTlsVersion: '1.2'
      ftpsState: 'Disabled'
      http20Enabled: true
    }
    functionAppConfig: {
      deployment: {
        storage: {
          type: 'blobContainer'
          value: '${storage.properties.primaryEndpoints.blob}${deploymentContainerName}'
          authentication: {
            type: 'UserAssignedIdentity'
            userAssignedIdentityResourceId: identity.id
          }
        }
      }
      runtime: {
        name: 'python'
        version: '3.13'
      }
      scaleAndConcurrency: {
        maximumInstanceCount: 40
        instanceMemoryMB: 2048
      }
    }
  }
}

resource appSettings 'Microsoft.Web/sites/config@2024-04-01' = {
  // checkov reads this child resource as a whole web app; its web-app checks don't apply to an app-settings list:
  // checkov:skip=CKV_AZURE_66: app settings, not a site (and no HTTP functions to trace)
  // checkov:skip=CKV_AZURE_63: app settings, not a site (and no HTTP functions to log)
  // checkov:skip=CKV_AZURE_65: app settings, not a site
  // checkov:skip=CKV_AZURE_80: app settings, not a site (Python, no .NET)
  // checkov:skip=CKV_AZURE_13: app settings, not a site (no HTTP functions to authenticate)
  // checkov:skip=CKV_AZURE_88: app settings, not a site (Flex Consumption uses blob deployment, not Azure Files)
  // checkov:skip=CKV_AZURE_222: app settings, not a site
  parent: functionApp
  name: 'appsettings'
  properties: {
    // Host storage through the identity: no connection string, no key.
    AzureWebJobsStorage__accountName: storage.name
    AzureWebJobsStorage__credential: 'managedidentity'
    AzureWebJobsStorage__clientId: identity.properties.clientId
    APPLICATIONINSIGHTS_CONNECTION_STRING: insights.properties.ConnectionString
    APPLICATIONINSIGHTS_AUTHENTICATION_STRING: 'ClientId=${identity.properties.clientId};Authorization=AAD'
    AZURE_CLIENT_ID: identity.properties.clientId
    RESPONDER_MODE: responderMode
    // The cloud this is deployed to: Graph, ARM, token scopes and storage suffixes follow it.
    RESPONDER_CLOUD: environment().name
    RESPONDER_LEDGER_TABLE: ledgerTableName
    RESPONDER_AUDIT_TABLE: auditTableName
    RESPONDER_CLEANUP_QUEUE: cleanupQueueName
    RESPONDER_DEAD_LETTER_CONTAINER: deadLetterContainerName
    RESPONDER_CLEANUP_DELAY_SECONDS: string(cleanupDelaySeconds)
    RESPONDER_MAX_DELETIONS_PER_HOUR: string(maxDeletionsPerHour)
    RESPONDER_DEVICE_CHECK_QUEUE: deviceCheckQueueName
    RESPONDER_DEVICE_CHECK_FIRST_DELAY_SECONDS: string(deviceCheckFirstDelaySeconds)
    RESPONDER_DEVICE_CHECK_WAIT_HOURS: string(deviceCheckWaitHours)
    RESPONDER_DEVICE_CHECK_SETTLE_HOURS: string(deviceCheckSettleHours)
    RESPONDER_WATCHED_SUBSCRIPTIONS: watchedSubscriptionIds
    RESPONDER_RECONCILE_SCHEDULE: reconcileSchedule
    RESPONDER_RECONCILE_MAX_ITEMS: string(reconcileMaxItems)
    RESPONDER_RECONCILE_STALE_DAYS: string(reconcileStaleDays)
    RESPONDER_SUPPRESSION_GROUP_ID: suppressionGroupId
    RESPONDER_SUPPRESSION_ATTRIBUTE: suppressionAttribute
    RESPONDER_SUPPRESS_ON_POWER_OFF: string(suppressOnPowerOff)
    RESPONDER_ALLOWED_SUBSCRIPTIONS: allowedSubscriptions
    RESPONDER_ALLOWED_RESOURCE_GROUPS: allowedResourceGroups
    RESPONDER_OPT_OUT_TAG: optOutTag
    RESPONDER_FINDINGS_TOPIC_ENDPOINT: findingsTopicEndpoint
    RESPONDER_FINDINGS_TAG: findingsTag
    RESPONDER_ENTRA_DS_DOMAINS: entraDsDomains
  }
  dependsOn: [
    appRoleAssignments
    telemetryPublisher
  ]
}

output functionAppId string = functionApp.id
output functionAppName string = functionApp.name
output identityPrincipalId string = identity.properties.principalId
output identityClientId string = identity.properties.clientId
output deliveryIdentityId string = deliveryIdentity.id
output storageId string = storage.id
output workspaceId string = logs.id
output applicationInsightsId string = insights.id
output deadLetterContainerName string = deadLetterContainerName
