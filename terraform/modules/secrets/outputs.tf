output "tls_secret_arn" {
  description = "Secret holding the TLS certificate and key (JSON cert_pem, key_pem)."
  value       = aws_secretsmanager_secret.this["tls"].arn
}

output "pepper_secret_arn" {
  description = "Secret holding the API-key pepper."
  value       = aws_secretsmanager_secret.this["pepper"].arn
}

output "database_url_secret_arn" {
  description = "Secret holding the PostgreSQL URL."
  value       = aws_secretsmanager_secret.this["database_url"].arn
}

output "secret_arns" {
  description = "Every secret ARN, by short name (tls, pepper, database_url)."
  value       = { for key, secret in aws_secretsmanager_secret.this : key => secret.arn }
}

output "kms_key_arns" {
  description = "Key that encrypts each secret, by short name (as configured on the secrets)."
  value       = { for key, secret in aws_secretsmanager_secret.this : key => secret.kms_key_id }
}
