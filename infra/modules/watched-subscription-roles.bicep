// What the app may do in a watched subscription: read (VMs, images, host pools), and, only when the
// verdict tag is switched on, write tags.
targetScope = 'subscription'

param principalId string
param grantTagContributor bool

var reader = 'acdd72a7-3385-48ef-bd42-f606fba81ae7'
var tagContributor = '4a9ae827-6dc8-4573-8ac7-8239d42aa03f'

resource readerAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = {
  name: guid(subscription().id, principalId, reader)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', reader)
  }
}

resource tagAssignment 'Microsoft.Authorization/roleAssignments@2022-04-01' = if (grantTagContributor) {
  name: guid(subscription().id, principalId, tagContributor)
  properties: {
    principalId: principalId
    principalType: 'ServicePrincipal'
    roleDefinitionId: subscriptionResourceId('Microsoft.Authorization/roleDefinitions', tagContributor)
  }
}
