output "role_arn" {
  description = "ARN of the gateway instance role."
  value       = aws_iam_role.gateway.arn
}

output "role_name" {
  description = "Name of the gateway instance role."
  value       = aws_iam_role.gateway.name
}

output "instance_profile_name" {
  description = "Instance profile that the launch template attaches."
  value       = aws_iam_instance_profile.gateway.name
}

output "autoscaling_service_role_arn" {
  description = "Service-linked role of the Auto Scaling group (allowed to use the EBS key)."
  value       = aws_iam_service_linked_role.autoscaling.arn
}

output "policy_json" {
  description = "The instance role's inline policy document."
  value       = aws_iam_role_policy.gateway.policy
}
