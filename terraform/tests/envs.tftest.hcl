# envs/prod and examples/minimal planned whole, with the provider mocked: US regions only,
# Object Lock mode per environment, every store under a customer key.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  allowed_account_ids = ["111122223333"]
  ami_id              = "ami-0123456789abcdef0"
  tacet_version       = "0.1.0"
  weights_s3_uri      = "s3://tacet-weights/llada-8b"
}

run "prod_plans_in_a_us_region" {
  command = plan
  module { source = "./envs/prod" }

  variables {
    region = "us-west-2"
  }

  # A distinct ARN per key, so that a store wired to the wrong key fails the test.
  override_resource {
    target          = module.kms.aws_kms_key.this["ebs"]
    override_during = plan
    values          = { arn = "arn:aws:kms:us-west-2:111122223333:key/ebs" }
  }

  override_resource {
    target          = module.kms.aws_kms_key.this["audit"]
    override_during = plan
    values          = { arn = "arn:aws:kms:us-west-2:111122223333:key/audit" }
  }

  override_resource {
    target          = module.kms.aws_kms_key.this["queue"]
    override_during = plan
    values          = { arn = "arn:aws:kms:us-west-2:111122223333:key/queue" }
  }

  override_resource {
    target          = module.kms.aws_kms_key.this["database"]
    override_during = plan
    values          = { arn = "arn:aws:kms:us-west-2:111122223333:key/database" }
  }

  override_resource {
    target          = module.kms.aws_kms_key.this["secrets"]
    override_during = plan
    values          = { arn = "arn:aws:kms:us-west-2:111122223333:key/secrets" }
  }

  override_resource {
    target          = module.kms.aws_kms_key.this["logs"]
    override_during = plan
    values          = { arn = "arn:aws:kms:us-west-2:111122223333:key/logs" }
  }

  assert {
    condition     = output.region == "us-west-2"
    error_message = "prod must plan in the requested US region."
  }
  assert {
    condition     = output.audit_object_lock_mode == "COMPLIANCE"
    error_message = "prod audit exports must be locked in COMPLIANCE mode."
  }
  assert {
    condition = output.store_kms_key_arns == {
      audit     = "arn:aws:kms:us-west-2:111122223333:key/audit"
      queue     = "arn:aws:kms:us-west-2:111122223333:key/queue"
      database  = "arn:aws:kms:us-west-2:111122223333:key/database"
      secrets   = "arn:aws:kms:us-west-2:111122223333:key/secrets"
      ebs       = "arn:aws:kms:us-west-2:111122223333:key/ebs"
      flow_logs = "arn:aws:kms:us-west-2:111122223333:key/logs"
    }
    error_message = "Every store (audit, queue, database, secrets, EBS, flow logs) must be encrypted with its own customer-managed key."
  }
  assert {
    condition     = output.audit_bucket_name == "tacet-prod-audit-111122223333-us-west-2"
    error_message = "The audit bucket name derives from the account and region."
  }
  assert {
    condition     = aws_ec2_instance_metadata_defaults.this[0].http_tokens == "required" && aws_ebs_encryption_by_default.this[0].enabled && aws_ec2_serial_console_access.this[0].enabled == false
    error_message = "Account defaults: IMDSv2 required, EBS encryption on, serial console off."
  }
}

run "prod_refuses_a_non_us_region" {
  command = plan
  module { source = "./envs/prod" }

  variables {
    region = "eu-west-1"
  }

  expect_failures = [var.region]
}

run "prod_refuses_a_missing_account_allow_list" {
  command = plan
  module { source = "./envs/prod" }

  variables {
    allowed_account_ids = []
  }

  expect_failures = [var.allowed_account_ids]
}

run "minimal_example_uses_governance_mode" {
  command = plan
  module { source = "./examples/minimal" }

  assert {
    condition     = output.audit_object_lock_mode == "GOVERNANCE"
    error_message = "The development example must lock in GOVERNANCE mode."
  }
}

run "minimal_example_refuses_a_non_us_region" {
  command = plan
  module { source = "./examples/minimal" }

  variables {
    region = "ap-southeast-2"
  }

  expect_failures = [var.region]
}
