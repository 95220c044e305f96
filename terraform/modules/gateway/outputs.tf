output "load_balancer_dns_name" {
  description = "DNS name of the load balancer; point the API host name at it."
  value       = aws_lb.this.dns_name
}

output "load_balancer_arn" {
  description = "ARN of the load balancer."
  value       = aws_lb.this.arn
}

output "target_group_arn" {
  description = "ARN of the target group (TCP to the gateway port)."
  value       = aws_lb_target_group.this.arn
}

output "autoscaling_group_name" {
  description = "Name of the Auto Scaling group."
  value       = aws_autoscaling_group.this.name
}

output "launch_template_id" {
  description = "Id of the launch template."
  value       = aws_launch_template.this.id
}

output "instance_security_group_id" {
  description = "Security group of the gateway instances (the database admits it)."
  value       = aws_security_group.instance.id
}

output "load_balancer_security_group_id" {
  description = "Security group of the load balancer."
  value       = aws_security_group.load_balancer.id
}

output "ebs_kms_key_arn" {
  description = "Key that encrypts the root volume (as configured on the launch template)."
  value       = one(aws_launch_template.this.block_device_mappings[*].ebs[0].kms_key_id)
}

output "user_data" {
  description = "Rendered cloud-init document (ARNs and names only, no secret values)."
  value       = local.user_data
}

output "engines_per_instance" {
  description = "Engines each instance type runs (one per GPU, or 1 with single_engine)."
  value       = { for t, gpus in local.gpus_per_instance : t => var.single_engine ? 1 : gpus }
}
