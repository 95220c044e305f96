output "bucket_name" {
  description = "Name of the audit bucket (the `audit_bucket` given to the gateway)."
  value       = aws_s3_bucket.this.bucket
}

output "bucket_arn" {
  description = "ARN of the audit bucket."
  value       = local.bucket_arn
}

output "object_lock_mode" {
  description = "Default Object Lock mode: COMPLIANCE in prod, GOVERNANCE in dev."
  value       = aws_s3_bucket_object_lock_configuration.this.rule[0].default_retention[0].mode
}

output "retention_days" {
  description = "Default Object Lock retention, in days."
  value       = aws_s3_bucket_object_lock_configuration.this.rule[0].default_retention[0].days
}

output "kms_key_arn" {
  description = "Key that encrypts every object (as configured on the bucket)."
  value       = one(aws_s3_bucket_server_side_encryption_configuration.this.rule[*].apply_server_side_encryption_by_default[0].kms_master_key_id)
}
