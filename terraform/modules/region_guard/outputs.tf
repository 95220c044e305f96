output "policy_json" {
  description = "The service control policy document (attach it yourself when create_policy is false)."
  value       = local.policy_json
}

output "policy_id" {
  description = "Id of the created policy, or null when create_policy is false."
  value       = try(aws_organizations_policy.this[0].id, null)
}
