# One customer-managed key per purpose, so that a key policy or a grant never opens more than
# one store, plus an asymmetric key that signs audit export manifests (its public key is what
# an auditor pins).

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  # The purposes every deployment needs; callers pick keys out of `key_arns` by these names.
  purposes = toset(["ebs", "audit", "queue", "database", "secrets", "logs"])

  account_id = data.aws_caller_identity.current.account_id
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name

  # Delegates key administration to IAM in this account; without it nobody could manage the key.
  account_statement = {
    Sid       = "AccountAdministration"
    Effect    = "Allow"
    Principal = { AWS = "arn:${local.partition}:iam::${local.account_id}:root" }
    Action    = "kms:*"
    Resource  = "*"
  }

  # EC2 Auto Scaling launches encrypted volumes on our behalf through its service-linked role.
  ebs_statements = [for statement in [
    {
      Sid       = "AutoScalingUseOfTheKey"
      Effect    = "Allow"
      Principal = { AWS = var.ebs_service_role_arns }
      Action    = ["kms:Encrypt", "kms:Decrypt", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:DescribeKey"]
      Resource  = "*"
    },
    {
      Sid       = "AutoScalingGrantsForAttachedVolumes"
      Effect    = "Allow"
      Principal = { AWS = var.ebs_service_role_arns }
      Action    = "kms:CreateGrant"
      Resource  = "*"
      Condition = { Bool = { "kms:GrantIsForAWSResource" = "true" } }
    },
  ] : statement if length(var.ebs_service_role_arns) > 0]

  # CloudWatch Logs encrypts log groups (VPC flow logs) itself, limited to this account's groups.
  logs_statements = [
    {
      Sid       = "CloudWatchLogsUseOfTheKey"
      Effect    = "Allow"
      Principal = { Service = "logs.${local.region}.amazonaws.com" }
      Action    = ["kms:Encrypt*", "kms:Decrypt*", "kms:ReEncrypt*", "kms:GenerateDataKey*", "kms:Describe*"]
      Resource  = "*"
      Condition = {
        ArnLike = {
          "kms:EncryptionContext:aws:logs:arn" = "arn:${local.partition}:logs:${local.region}:${local.account_id}:log-group:*"
        }
      }
    },
  ]

  extra_statements = {
    ebs      = local.ebs_statements
    audit    = []
    queue    = []
    database = []
    secrets  = []
    logs     = local.logs_statements
  }
}

resource "aws_kms_key" "this" {
  for_each = local.purposes

  description             = "${var.name} ${each.key} encryption"
  key_usage               = "ENCRYPT_DECRYPT"
  enable_key_rotation     = true
  rotation_period_in_days = var.rotation_period_in_days
  deletion_window_in_days = var.deletion_window_in_days
  multi_region            = false

  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = concat([local.account_statement], local.extra_statements[each.key])
  })

  tags = merge(var.tags, { Purpose = each.key })
}

resource "aws_kms_alias" "this" {
  for_each = local.purposes

  name          = "alias/${var.name}-${each.key}"
  target_key_id = aws_kms_key.this[each.key].key_id
}

# Asymmetric keys cannot rotate automatically in KMS; a new key (and a new pinned fingerprint)
# is a deliberate operator action, which is what an auditor expects of a signing key.
resource "aws_kms_key" "audit_signing" {
  #checkov:skip=CKV_AWS_7:KMS cannot rotate asymmetric SIGN_VERIFY keys; rotation is a new key and a new published fingerprint.
  description              = "${var.name} audit export manifest signing"
  key_usage                = "SIGN_VERIFY"
  customer_master_key_spec = var.audit_signing_key_spec
  deletion_window_in_days  = var.deletion_window_in_days
  multi_region             = false

  policy = jsonencode({
    Version   = "2012-10-17"
    Statement = [local.account_statement]
  })

  tags = merge(var.tags, { Purpose = "audit-signing" })
}

resource "aws_kms_alias" "audit_signing" {
  name          = "alias/${var.name}-audit-signing"
  target_key_id = aws_kms_key.audit_signing.key_id
}
