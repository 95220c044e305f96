# The gateway's three secrets. Terraform creates the containers only: the values are put by the
# operator (`aws secretsmanager put-secret-value`), so no secret ever lands in Terraform state.

locals {
  secrets = {
    tls          = "TLS server certificate and key of the gateway, JSON {\"cert_pem\": ..., \"key_pem\": ...}"
    pepper       = "Pepper mixed into API-key digests"
    database_url = "PostgreSQL URL of the shared control-plane database"
  }
}

resource "aws_secretsmanager_secret" "this" {
  #checkov:skip=CKV2_AWS_57:These values have no rotation Lambda: the certificate is renewed by the operator's CA, a pepper change invalidates every API key, and the database uses IAM tokens.
  for_each = local.secrets

  name                    = "${var.name}/${each.key}"
  description             = each.value
  kms_key_id              = var.kms_key_arn
  recovery_window_in_days = var.recovery_window_in_days

  tags = var.tags
}
