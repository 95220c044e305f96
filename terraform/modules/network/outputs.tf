output "vpc_id" {
  description = "Id of the VPC."
  value       = aws_vpc.this.id
}

output "vpc_cidr_block" {
  description = "IPv4 range of the VPC."
  value       = aws_vpc.this.cidr_block
}

output "private_subnet_ids" {
  description = "Private subnets (no route out), one per zone: GPU instances, database, interface endpoints."
  value       = aws_subnet.private[*].id
}

output "public_subnet_ids" {
  description = "Public subnets, one per zone, for the load balancer only; empty when public_load_balancer is false."
  value       = aws_subnet.public[*].id
}

output "private_route_table_id" {
  description = "Route table of the private subnets."
  value       = aws_route_table.private.id
}

output "s3_endpoint_id" {
  description = "Id of the S3 gateway endpoint; the audit bucket accepts writes only through it."
  value       = aws_vpc_endpoint.s3.id
}

output "s3_prefix_list_id" {
  description = "Prefix list of S3 in this region, for security group egress rules."
  value       = aws_vpc_endpoint.s3.prefix_list_id
}

output "interface_endpoint_ids" {
  description = "Id of each interface endpoint, by service short name."
  value       = { for service, endpoint in aws_vpc_endpoint.interface : service => endpoint.id }
}

output "endpoint_security_group_id" {
  description = "Security group of the interface endpoints."
  value       = aws_security_group.endpoints.id
}

output "flow_log_group_name" {
  description = "CloudWatch log group receiving the VPC flow logs."
  value       = aws_cloudwatch_log_group.flow.name
}

output "flow_logs_kms_key_arn" {
  description = "Key that encrypts the flow log group (as configured on the group)."
  value       = aws_cloudwatch_log_group.flow.kms_key_id
}
