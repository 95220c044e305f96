output "region" {
  description = "Region of the deployment."
  value       = var.region
}

output "load_balancer_dns_name" {
  description = "DNS name of the load balancer; point the API host name at it."
  value       = module.gateway.load_balancer_dns_name
}

output "audit_bucket_name" {
  description = "Name of the audit bucket."
  value       = module.audit_store.bucket_name
}

output "audit_object_lock_mode" {
  description = "Object Lock mode of the audit bucket (COMPLIANCE)."
  value       = module.audit_store.object_lock_mode
}

output "audit_signing_key_arn" {
  description = "Key that signs audit manifests; publish its public key fingerprint to auditors."
  value       = module.kms.audit_signing_key_arn
}

output "queue_url" {
  description = "URL of the bulk jobs queue."
  value       = module.queue.queue_url
}

output "database_address" {
  description = "Host name of the control-plane database."
  value       = module.database.address
}

output "secret_arns" {
  description = "Secrets to fill after the first apply (tls, pepper, database_url)."
  value       = module.secrets.secret_arns
}

output "store_kms_key_arns" {
  description = "Customer-managed key of every store, by store (audit, queue, database, secrets, ebs, flow_logs)."
  value = {
    audit     = module.audit_store.kms_key_arn
    queue     = module.queue.kms_key_arn
    database  = module.database.kms_key_arn
    secrets   = distinct(values(module.secrets.kms_key_arns))[0]
    ebs       = module.gateway.ebs_kms_key_arn
    flow_logs = module.network.flow_logs_kms_key_arn
  }
}

output "instance_role_arn" {
  description = "ARN of the gateway instance role."
  value       = module.iam.role_arn
}

output "autoscaling_group_name" {
  description = "Name of the gateway Auto Scaling group."
  value       = module.gateway.autoscaling_group_name
}

output "region_deny_scp_json" {
  description = "Service control policy that denies requests outside the US regions."
  value       = module.region_guard.policy_json
}
