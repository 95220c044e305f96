# modules/audit_store: Object Lock mode per environment, SSE-KMS with our key, no public access,
# TLS-only and VPC-endpoint-only writes.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  bucket_name             = "tacet-test-audit"
  environment             = "prod"
  kms_key_arn             = "arn:aws:kms:us-east-1:111122223333:key/44444444-4444-4444-8444-444444444444"
  writer_vpc_endpoint_ids = ["vpce-0123456789abcdef0"]
}

run "prod_locks_in_compliance_mode" {
  command = plan
  module { source = "./modules/audit_store" }

  assert {
    condition     = aws_s3_bucket.this.object_lock_enabled == true
    error_message = "Object Lock must be enabled on the bucket."
  }
  assert {
    condition     = output.object_lock_mode == "COMPLIANCE" && output.retention_days == 365
    error_message = "prod must lock every object in COMPLIANCE mode for the retention period."
  }
  assert {
    condition     = aws_s3_bucket_versioning.this.versioning_configuration[0].status == "Enabled"
    error_message = "Versioning must be on."
  }
}

run "dev_locks_in_governance_mode" {
  command = plan
  module { source = "./modules/audit_store" }

  variables {
    environment    = "dev"
    retention_days = 7
  }

  assert {
    condition     = output.object_lock_mode == "GOVERNANCE" && output.retention_days == 7
    error_message = "dev must use GOVERNANCE mode so that test buckets can be emptied."
  }
}

run "objects_are_encrypted_with_the_customer_key" {
  command = plan
  module { source = "./modules/audit_store" }

  assert {
    condition = alltrue([for r in aws_s3_bucket_server_side_encryption_configuration.this.rule :
    r.apply_server_side_encryption_by_default[0].sse_algorithm == "aws:kms" && r.apply_server_side_encryption_by_default[0].kms_master_key_id == var.kms_key_arn])
    error_message = "Default encryption must be SSE-KMS with the customer-managed key."
  }
  assert {
    condition     = output.kms_key_arn == var.kms_key_arn
    error_message = "The module must report the key it configured."
  }
}

run "public_access_is_blocked_and_writes_are_fenced" {
  command = plan
  module { source = "./modules/audit_store" }

  assert {
    condition = (aws_s3_bucket_public_access_block.this.block_public_acls && aws_s3_bucket_public_access_block.this.block_public_policy &&
    aws_s3_bucket_public_access_block.this.ignore_public_acls && aws_s3_bucket_public_access_block.this.restrict_public_buckets)
    error_message = "All four public access blocks must be on."
  }
  assert {
    condition     = one([for s in jsondecode(aws_s3_bucket_policy.this.policy).Statement : s if s.Sid == "DenyInsecureTransport"]).Condition.Bool["aws:SecureTransport"] == "false"
    error_message = "Requests without TLS must be denied."
  }
  assert {
    condition     = tolist(one([for s in jsondecode(aws_s3_bucket_policy.this.policy).Statement : s if s.Sid == "DenyWritesOutsideTheVpcEndpoint"]).Condition.StringNotEquals["aws:SourceVpce"]) == var.writer_vpc_endpoint_ids
    error_message = "Writes from outside the VPC endpoint must be denied."
  }
  assert {
    condition     = alltrue([for s in jsondecode(aws_s3_bucket_policy.this.policy).Statement : s.Effect == "Deny"])
    error_message = "The bucket policy may only deny; access is granted by the instance role."
  }
}

run "unknown_environment_is_refused" {
  command = plan
  module { source = "./modules/audit_store" }

  variables {
    environment = "staging"
  }

  expect_failures = [var.environment]
}

run "aws_managed_key_is_refused" {
  command = plan
  module { source = "./modules/audit_store" }

  variables {
    kms_key_arn = "alias/aws/s3"
  }

  expect_failures = [var.kms_key_arn]
}

run "writes_need_a_vpc_endpoint" {
  command = plan
  module { source = "./modules/audit_store" }

  variables {
    writer_vpc_endpoint_ids = []
  }

  expect_failures = [var.writer_vpc_endpoint_ids]
}

run "non_us_region_is_refused" {
  command = plan
  module { source = "./modules/audit_store" }

  override_data {
    target = data.aws_region.current
    values = { name = "eu-central-1" }
  }

  expect_failures = [aws_s3_bucket.this]
}
