# The gateway instance role: read the model weights, write audit objects, use the jobs queue,
# sign audit manifests, read its own three secrets, connect to its database. Nothing else,
# except the AWS-managed SSM core policy that replaces SSH.

data "aws_caller_identity" "current" {}
data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  partition  = data.aws_partition.current.partition
  region     = data.aws_region.current.name
  account_id = data.aws_caller_identity.current.account_id

  weights_parts      = regex("^s3://([^/]+)/?(.*)$", var.weights_s3_uri)
  weights_bucket     = local.weights_parts[0]
  weights_prefix     = trimsuffix(local.weights_parts[1], "/")
  weights_bucket_arn = "arn:${local.partition}:s3:::${local.weights_bucket}"
  weights_key_arns   = var.weights_kms_key_arn == null ? [] : [var.weights_kms_key_arn]
  weights_objects    = local.weights_prefix == "" ? "${local.weights_bucket_arn}/*" : "${local.weights_bucket_arn}/${local.weights_prefix}/*"

  statements = concat(
    [
      {
        Sid      = "ReadModelWeights"
        Effect   = "Allow"
        Action   = ["s3:GetObject"]
        Resource = [local.weights_objects]
      },
      {
        Sid       = "ListModelWeights"
        Effect    = "Allow"
        Action    = ["s3:ListBucket"]
        Resource  = [local.weights_bucket_arn]
        Condition = { StringLike = { "s3:prefix" = [local.weights_prefix == "" ? "*" : "${local.weights_prefix}/*"] } }
      },
      {
        Sid      = "WriteAuditObjects"
        Effect   = "Allow"
        Action   = ["s3:PutObject"]
        Resource = ["${var.audit_bucket_arn}/*"]
      },
      {
        Sid       = "EncryptAuditObjects"
        Effect    = "Allow"
        Action    = ["kms:GenerateDataKey", "kms:Decrypt"]
        Resource  = [var.audit_kms_key_arn]
        Condition = { StringEquals = { "kms:ViaService" = "s3.${local.region}.amazonaws.com" } }
      },
      {
        Sid      = "SignAuditManifests"
        Effect   = "Allow"
        Action   = ["kms:Sign", "kms:GetPublicKey"]
        Resource = [var.audit_signing_key_arn]
      },
      {
        Sid    = "UseJobQueue"
        Effect = "Allow"
        Action = [
          "sqs:SendMessage",
          "sqs:ReceiveMessage",
          "sqs:DeleteMessage",
          "sqs:ChangeMessageVisibility",
          "sqs:GetQueueAttributes",
          "sqs:GetQueueUrl",
        ]
        Resource = [var.queue_arn]
      },
      {
        Sid       = "EncryptQueueMessages"
        Effect    = "Allow"
        Action    = ["kms:GenerateDataKey", "kms:Decrypt"]
        Resource  = [var.queue_kms_key_arn]
        Condition = { StringEquals = { "kms:ViaService" = "sqs.${local.region}.amazonaws.com" } }
      },
      {
        Sid      = "ReadOwnSecrets"
        Effect   = "Allow"
        Action   = ["secretsmanager:GetSecretValue"]
        Resource = var.secret_arns
      },
      {
        Sid       = "DecryptOwnSecrets"
        Effect    = "Allow"
        Action    = ["kms:Decrypt"]
        Resource  = [var.secrets_kms_key_arn]
        Condition = { StringEquals = { "kms:ViaService" = "secretsmanager.${local.region}.amazonaws.com" } }
      },
      {
        Sid      = "ConnectToDatabase"
        Effect   = "Allow"
        Action   = ["rds-db:connect"]
        Resource = ["arn:${local.partition}:rds-db:${local.region}:${local.account_id}:dbuser:${var.database_resource_id}/${var.database_iam_user}"]
      },
    ],
    [
      for key_arn in local.weights_key_arns : {
        Sid       = "DecryptModelWeights"
        Effect    = "Allow"
        Action    = ["kms:Decrypt"]
        Resource  = [key_arn]
        Condition = { StringEquals = { "kms:ViaService" = "s3.${local.region}.amazonaws.com" } }
      }
    ],
  )
}

resource "aws_iam_role" "gateway" {
  name = "${var.name}-gateway"

  assume_role_policy = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Effect    = "Allow"
      Principal = { Service = "ec2.amazonaws.com" }
      Action    = "sts:AssumeRole"
      Condition = { StringEquals = { "aws:SourceAccount" = local.account_id } }
    }]
  })

  tags = var.tags
}

resource "aws_iam_role_policy" "gateway" {
  name   = "tacet-gateway"
  role   = aws_iam_role.gateway.id
  policy = jsonencode({ Version = "2012-10-17", Statement = local.statements })
}

# Session Manager replaces SSH: no key pair, no port 22.
resource "aws_iam_role_policy_attachment" "ssm_core" {
  role       = aws_iam_role.gateway.name
  policy_arn = "arn:${local.partition}:iam::aws:policy/AmazonSSMManagedInstanceCore"
}

resource "aws_iam_instance_profile" "gateway" {
  name = "${var.name}-gateway"
  role = aws_iam_role.gateway.name

  tags = var.tags
}

# A service-linked role of our own for the Auto Scaling group, so that the EBS key policy can
# name exactly the role that attaches encrypted root volumes.
resource "aws_iam_service_linked_role" "autoscaling" {
  aws_service_name = "autoscaling.amazonaws.com"
  custom_suffix    = var.name
  description      = "Launches ${var.name} gateway instances with CMK-encrypted volumes"

  tags = var.tags
}
