output "load_balancer_dns_name" {
  description = "DNS name of the load balancer."
  value       = module.gateway.load_balancer_dns_name
}

output "audit_bucket_name" {
  description = "Name of the audit bucket."
  value       = module.audit_store.bucket_name
}

output "audit_object_lock_mode" {
  description = "Object Lock mode of the audit bucket (GOVERNANCE in this example)."
  value       = module.audit_store.object_lock_mode
}

output "secret_arns" {
  description = "Secrets to fill after the first apply (tls, pepper, database_url)."
  value       = module.secrets.secret_arns
}
