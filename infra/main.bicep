// The Intune VM compliance responder: everything it needs, in one subscription-scope deployment.
// `azd up` runs it twice: first without event subscriptions (an AzureFunction endpoint can only be
// created once the code is deployed), then, from the postdeploy hook, with them.
targetScope = 'subscription'

@minLength(1)
@maxLength(32)
@description('Name of the environment (azd); used in resource names.')
param environmentName string

@description('Azure region of the app and its storage.')
param location string

@description('Subscriptions to watch, each with an existing resource group that will hold its Event Grid system topic.')
param watchedSubscriptions watchedSubscription[]

@allowed([
  'audit'
  'enforce'
])
@description('audit: decide and record, change nothing. enforce: act. Start with audit.')
param responderMode string = 'audit'

@description('Object id of the Entra group that holds the devices of deallocated VMs (empty: not used).')
param suppressionGroupId string = ''

@description('Entra device extensionAttribute number (1-15) marked on deallocation (empty: not used).')
param suppressionAttribute string = ''

@description('Also mark VMs that are stopped but still allocated.')
param suppressOnPowerOff bool = false

@minValue(0)
@maxValue(604800)
@description('Seconds a cleanup waits after a VM deletion.')
param cleanupDelaySeconds int = 3600

@minValue(1)
@description('Blast-radius cap: records deleted per rolling hour, all instances together; more waits in the queue.')
param maxDeletionsPerHour int = 50

@minValue(1)
@maxValue(604800)
@description('Seconds after a VM is created before its device is first looked for in Intune (device-side checks).')
param deviceCheckFirstDelaySeconds int = 900

@minValue(1)
@maxValue(168)
@description('Hours to keep looking for a new VM\'s Intune device before reporting it as not enrolled.')
param deviceCheckWaitHours int = 24

@minValue(0)
@maxValue(168)
@description('Hours after a device is found before it is looked at again, once its dynamic groups can have settled (0: no second look).')
param deviceCheckSettleHours int = 4

@description('NCRONTAB schedule of the reconciliation timer (default: daily at 03:30 UTC).')
param reconcileSchedule string = '0 30 3 * * *'

@minValue(1)
@description('VMs and Intune records a reconciliation run looks at; the next run resumes.')
param reconcileMaxItems int = 500

@minValue(1)
@description('Days an Intune VM record must be silent, with no VM of its name, before reconciliation cleans it up.')
param reconcileStaleDays int = 30

@description('Comma-separated subscription ids the responder may act in (empty: every watched one).')
param allowedSubscriptions string = ''

@description('Comma-separated subscriptionId/resourceGroup entries the responder may act in (empty: all).')
param allowedResourceGroups string = ''

@description('The tag (name=value) that opts a VM out.')
param optOutTag string = 'intune-responder=ignore'

@description('Endpoint of an Event Grid topic for prerequisite findings (empty: off).')
param findingsTopicEndpoint string = ''

@description('Resource id of that topic, to grant the app EventGrid Data Sender on it (empty: none).')
param findingsTopicResourceId string = ''

@description('Tag name for the prerequisite verdict on each VM (empty: off; needs Tag Contributor).')
param findingsTag string = ''

@description('Comma-separated Entra Domain Services domain names.')
param entraDsDomains string = ''

@description('Create the Event Grid subscriptions to the functions (true once the code is deployed).')
param createEventSubscriptions bool = false

@description('Grant the Microsoft Graph application roles to the identity (needs a Graph admin as deployer).')
param grantGraphRoles bool = false

@description('Name of the resource group (empty: rg-<environmentName>).')
param resourceGroupName string = ''

@description('Name of the app\'s managed identity (empty: id-responder-<token>).')
param identityName string = ''

@description('Name of the Log Analytics workspace (empty: log-responder-<token>).')
param logAnalyticsName string = ''

@description('Name of the Application Insights component (empty: appi-responder-<token>).')
param applicationInsightsName string = ''

@description('Name of the storage account, 3-24 lower-case letters and digits (empty: stresp<token>).')
param storageAccountName string = ''

@description('Name of the Flex Consumption plan (empty: plan-responder-<token>).')
param planName string = ''

@description('Name of the Function App (empty: func-responder-<token>).')
param functionAppName string = ''

// No default, so azd asks for it when RESPONDER_ALERT_EMAIL is unset or empty (and keeps the answer).
@description('E-mail address that receives the alerts (infra/monitoring/alerts.json, and Event Grid\'s dead-lettered, dropped and failing deliveries). Leave it empty only on purpose: with existingActionGroupId, or to see the alerts in the portal only (Monitor → Alerts), with nobody told.')
param alertEmail string

@description('Resource id of an existing action group the alerts notify instead (empty: one is made for alertEmail).')
param existingActionGroupId string = ''

@description('Malformed or misrouted deliveries per hour before the bad-events alert fires.')
param badEventsPerHour int = 10

@minValue(1)
@description('Requests Graph or ARM throttled (429) per half hour, two half hours in a row, before the throttling alert fires.')
param throttledPerHalfHour int = 30

// Reconciliation reports a device marked for 7 days or more (responder/stages/reconciliation.py REPORT_MARKED_AFTER).
@minValue(7)
@description('Days a device may stay marked as deallocated before the marked-too-long alert names its VM (7 or more).')
param markedDaysAlert int = 14

@description('Tags for every resource.')
param tags object = {}

// subscriptionId: the subscription to watch; resourceGroupName: an existing resource group in it
// that holds (or will hold) the subscription's Event Grid system topic; existingSystemTopicName: the
// subscription's Microsoft.Resources.Subscriptions system topic when it already has one (one per
// subscription: find it with `az eventgrid system-topic list --query "[?topicType=='Microsoft.Resources.Subscriptions']"`).
type watchedSubscription = {
  subscriptionId: string
  resourceGroupName: string
  existingSystemTopicName: string?
}

var abbrs = loadJsonContent('abbreviations.json')
var resourceToken = toLower(uniqueString(subscription().id, environmentName, location))
var allTags = union(tags, { 'azd-env-name': environmentName })
// Each name: the override when given, else the azd convention (abbreviation, workload, token).
var names = {
  identity: !empty(identityName) ? identityName : '${abbrs.managedIdentityUserAssignedIdentities}responder-${resourceToken}'
  deliveryIdentity: '${abbrs.managedIdentityUserAssignedIdentities}responder-delivery-${resourceToken}'
  logAnalytics: !empty(logAnalyticsName) ? logAnalyticsName : '${abbrs.operationalInsightsWorkspaces}responder-${resourceToken}'
  applicationInsights: !empty(applicationInsightsName) ? applicationInsightsName : '${abbrs.insightsComponents}responder-${resourceToken}'
  storage: !empty(storageAccountName) ? storageAccountName : '${abbrs.storageStorageAccounts}resp${resourceToken}'
  plan: !empty(planName) ? planName : '${abbrs.webServerFarms}responder-${resourceToken}'
  functionApp: !empty(functionAppName) ? functionAppName : '${abbrs.webSitesFunctions}responder-${resourceToken}'
}

resource appGroup 'Microsoft.Resources/resourceGroups@2024-03-01' = {
  name: !empty(resourceGroupName) ? resourceGroupName : '${abbrs.resourcesResourceGroups}${environmentName}'
  location: location
  tags: allTags
}

module app 'modules/app.bicep' = {
  name: 'responder-app'
  scope: appGroup
  params: {
    location: location
    names: names
    tags: allTags
    responderMode: responderMode
    suppressionGroupId: suppressionGroupId
    suppressionAttribute: suppressionAttribute
    suppressOnPowerOff: suppressOnPowerOff
    cleanupDelaySeconds: cleanupDelaySeconds
    maxDeletionsPerHour: maxDeletionsPerHour
    deviceCheckFirstDelaySeconds: deviceCheckFirstDelaySeconds
    deviceCheckWaitHours: deviceCheckWaitHours
    deviceCheckSettleHours: deviceCheckSettleHours
    watchedSubscriptionIds: join(map(watchedSubscriptions, watched => watched.subscriptionId), ',')
    reconcileSchedule: reconcileSchedule
    reconcileMaxItems: reconcileMaxItems
    reconcileStaleDays: reconcileStaleDays
    allowedSubscriptions: allowedSubscriptions
    allowedResourceGroups: allowedResourceGroups
    optOutTag: optOutTag
    findingsTopicEndpoint: findingsTopicEndpoint
    findingsTag: findingsTag
    entraDsDomains: entraDsDomains
  }
}

module monitoring 'modules/monitoring.bicep' = {
  name: 'responder-monitoring'
  scope: appGroup
  params: {
    location: location
    tags: allTags
    workspaceId: app.outputs.workspaceId
    applicationInsightsId: app.outputs.applicationInsightsId
    actionGroupName: '${abbrs.insightsActionGroups}intune-vm-responder'
    alertEmail: alertEmail
    existingActionGroupId: existingActionGroupId
    badEventsPerHour: badEventsPerHour
    throttledPerHalfHour: throttledPerHalfHour
    markedDaysAlert: markedDaysAlert
  }
}

module watchedRoles 'modules/watched-subscription-roles.bicep' = [
  for watched in watchedSubscriptions: {
    name: 'responder-roles-${uniqueString(watched.subscriptionId)}'
    scope: subscription(watched.subscriptionId)
    params: {
      principalId: app.outputs.identityPrincipalId
      grantTagContributor: !empty(findingsTag)
    }
  }
]

module watchedTopics 'modules/watched-subscription.bicep' = [
  for watched in watchedSubscriptions: {
    name: 'responder-events-${uniqueString(watched.subscriptionId)}'
    scope: resourceGroup(watched.subscriptionId, watched.resourceGroupName)
    params: {
      subscriptionId: watched.subscriptionId
      functionAppId: app.outputs.functionAppId
      deliveryIdentityId: app.outputs.deliveryIdentityId
      deadLetterStorageId: app.outputs.storageId
      deadLetterContainerName: app.outputs.deadLetterContainerName
      topicPrefix: abbrs.eventGridEventSubscriptionsSystemTopics
      createEventSubscriptions: createEventSubscriptions
      existingSystemTopicName: watched.?existingSystemTopicName ?? ''
      actionGroupId: monitoring.outputs.actionGroupId
      tags: allTags
    }
  }
]

module topicSender 'modules/topic-sender.bicep' = if (!empty(findingsTopicResourceId)) {
  name: 'responder-topic-sender'
  scope: resourceGroup(split(findingsTopicResourceId, '/')[2], split(findingsTopicResourceId, '/')[4])
  params: {
    topicName: last(split(findingsTopicResourceId, '/'))
    principalId: app.outputs.identityPrincipalId
  }
}

// Granted by the first provision only: re-creating an existing appRoleAssignedTo fails (a known
// behaviour of the Graph Bicep extension), and the second provision only adds the event subscriptions.
module graphRoles 'modules/graph-roles.bicep' = if (grantGraphRoles && !createEventSubscriptions) {
  name: 'responder-graph-roles'
  scope: appGroup
  params: {
    principalId: app.outputs.identityPrincipalId
  }
}

output AZURE_RESOURCE_GROUP string = appGroup.name
output AZURE_FUNCTION_APP_NAME string = app.outputs.functionAppName
output RESPONDER_WORKBOOK_ID string = monitoring.outputs.workbookId
output RESPONDER_IDENTITY_CLIENT_ID string = app.outputs.identityClientId
output RESPONDER_IDENTITY_PRINCIPAL_ID string = app.outputs.identityPrincipalId
@description('The identity Event Grid delivers and dead-letters with: assign it to an existing system topic.')
output RESPONDER_DELIVERY_IDENTITY_ID string = app.outputs.deliveryIdentityId
