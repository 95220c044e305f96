output "key_arns" {
  description = "ARN of each symmetric key, by purpose (ebs, audit, queue, database, secrets, logs)."
  value       = { for purpose, key in aws_kms_key.this : purpose => key.arn }
}

output "key_ids" {
  description = "Key id of each symmetric key, by purpose."
  value       = { for purpose, key in aws_kms_key.this : purpose => key.key_id }
}

output "alias_names" {
  description = "Alias of each symmetric key, by purpose."
  value       = { for purpose, alias in aws_kms_alias.this : purpose => alias.name }
}

output "audit_signing_key_arn" {
  description = "ARN of the asymmetric key that signs audit export manifests."
  value       = aws_kms_key.audit_signing.arn
}

output "audit_signing_key_spec" {
  description = "Key spec of the audit signing key."
  value       = aws_kms_key.audit_signing.customer_master_key_spec
}
