# The audit store: metadata-only audit exports under S3 Object Lock. COMPLIANCE mode in prod
# means that once written, an export cannot be altered or deleted before its retention date by
# anyone, including the account root; the signed manifest chain proves what was written.

data "aws_partition" "current" {}
data "aws_region" "current" {}

locals {
  us_regions       = ["us-east-1", "us-east-2", "us-west-1", "us-west-2"]
  object_lock_mode = var.environment == "prod" ? "COMPLIANCE" : "GOVERNANCE"

  # Built from the name so the policy is known at plan time (and testable offline).
  bucket_arn = "arn:${data.aws_partition.current.partition}:s3:::${var.bucket_name}"
}

resource "aws_s3_bucket" "this" {
  #checkov:skip=CKV_AWS_18:Server access logs would need a second, unlocked bucket; S3 data events in the organization's CloudTrail witness this bucket (README).
  #checkov:skip=CKV_AWS_144:Cross-region replication is left to the operator: a second US region and its own locked bucket are a data-residency decision.
  #checkov:skip=CKV2_AWS_62:Nothing consumes event notifications; verification walks the signed manifest chain instead.
  bucket              = var.bucket_name
  object_lock_enabled = true
  force_destroy       = false

  tags = var.tags

  lifecycle {
    precondition {
      condition     = contains(local.us_regions, data.aws_region.current.name)
      error_message = "The audit store must live in a US region (us-east-1, us-east-2, us-west-1, us-west-2)."
    }
  }
}

resource "aws_s3_bucket_versioning" "this" {
  bucket = aws_s3_bucket.this.id

  versioning_configuration {
    status = "Enabled"
  }
}

resource "aws_s3_bucket_object_lock_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    default_retention {
      mode = local.object_lock_mode
      days = var.retention_days
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_server_side_encryption_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    apply_server_side_encryption_by_default {
      sse_algorithm     = "aws:kms"
      kms_master_key_id = var.kms_key_arn
    }
    bucket_key_enabled = true
  }
}

resource "aws_s3_bucket_public_access_block" "this" {
  bucket = aws_s3_bucket.this.id

  block_public_acls       = true
  block_public_policy     = true
  ignore_public_acls      = true
  restrict_public_buckets = true
}

resource "aws_s3_bucket_ownership_controls" "this" {
  bucket = aws_s3_bucket.this.id

  rule {
    object_ownership = "BucketOwnerEnforced"
  }
}

resource "aws_s3_bucket_lifecycle_configuration" "this" {
  bucket = aws_s3_bucket.this.id

  # Locked objects are never expired here: retention ends what Object Lock protects, and what
  # happens after is a records-management decision. Only unfinished uploads are cleaned up.
  rule {
    id     = "abort-incomplete-uploads"
    status = "Enabled"

    filter {}

    abort_incomplete_multipart_upload {
      days_after_initiation = 7
    }
  }

  depends_on = [aws_s3_bucket_versioning.this]
}

resource "aws_s3_bucket_policy" "this" {
  bucket = aws_s3_bucket.this.id

  policy = jsonencode({
    Version = "2012-10-17"
    Statement = [
      {
        Sid       = "DenyInsecureTransport"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [local.bucket_arn, "${local.bucket_arn}/*"]
        Condition = { Bool = { "aws:SecureTransport" = "false" } }
      },
      {
        Sid       = "DenyTlsOlderThan12"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:*"
        Resource  = [local.bucket_arn, "${local.bucket_arn}/*"]
        Condition = { NumericLessThan = { "s3:TlsVersion" = "1.2" } }
      },
      {
        Sid       = "DenyWritesOutsideTheVpcEndpoint"
        Effect    = "Deny"
        Principal = "*"
        Action    = ["s3:PutObject", "s3:PutObjectRetention", "s3:PutObjectLegalHold"]
        Resource  = "${local.bucket_arn}/*"
        Condition = { StringNotEquals = { "aws:SourceVpce" = var.writer_vpc_endpoint_ids } }
      },
      {
        Sid       = "DenyOtherEncryption"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = "${local.bucket_arn}/*"
        Condition = { StringNotEqualsIfExists = { "s3:x-amz-server-side-encryption" = "aws:kms" } }
      },
      {
        Sid       = "DenyOtherKmsKey"
        Effect    = "Deny"
        Principal = "*"
        Action    = "s3:PutObject"
        Resource  = "${local.bucket_arn}/*"
        Condition = { StringNotEqualsIfExists = { "s3:x-amz-server-side-encryption-aws-kms-key-id" = var.kms_key_arn } }
      },
    ]
  })

  depends_on = [aws_s3_bucket_public_access_block.this]
}
