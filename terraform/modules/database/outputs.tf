output "address" {
  description = "Host name of the instance."
  value       = aws_db_instance.this.address
}

output "port" {
  description = "PostgreSQL port."
  value       = aws_db_instance.this.port
}

output "database_name" {
  description = "Name of the database."
  value       = aws_db_instance.this.db_name
}

output "resource_id" {
  description = "RDS resource id, part of the rds-db:connect ARN for IAM authentication."
  value       = aws_db_instance.this.resource_id
}

output "iam_database_user" {
  description = "Database user the gateway connects as with IAM authentication."
  value       = var.iam_database_user
}

output "security_group_id" {
  description = "Security group of the instance."
  value       = aws_security_group.this.id
}

output "master_user_secret_arn" {
  description = "Secrets Manager secret, managed by RDS, holding the master credentials."
  value       = try(aws_db_instance.this.master_user_secret[0].secret_arn, null)
}

output "kms_key_arn" {
  description = "Key that encrypts the storage (as configured on the instance)."
  value       = aws_db_instance.this.kms_key_id
}
