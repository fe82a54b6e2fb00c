// Microsoft Graph application roles for the app's identity (design §9), through the Microsoft Graph
// Bicep extension. Opt-in: the deployer needs the Privileged Role Administrator (or Global
// Administrator) role to grant application permissions; a new identity may need a re-run while
// Entra replicates it.
extension microsoftGraphV1

param principalId string

var graphAppId = '00000003-0000-0000-c000-000000000000'
var roleNames = [
  'DeviceManagementManagedDevices.ReadWrite.All' // find and delete managed devices
  'DeviceManagementManagedDevices.PrivilegedOperations.All' // syncDevice
  'Device.ReadWrite.All' // extension attribute, delete cloud-only Entra devices
  'GroupMember.ReadWrite.All' // the suppression group
  'DeviceManagementConfiguration.Read.All' // profile checks
]

resource graph 'Microsoft.Graph/servicePrincipals@v1.0' existing = {
  appId: graphAppId
}

resource grants 'Microsoft.Graph/appRoleAssignedTo@v1.0' = [
  for role in roleNames: {
    principalId: principalId
    resourceId: graph.id
    appRoleId: first(filter(graph.appRoles, appRole => appRole.value == role)).id
  }
]
