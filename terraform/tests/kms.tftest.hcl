# modules/kms: one rotating customer key per purpose and an asymmetric audit signing key.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  name                  = "tacet-test"
  ebs_service_role_arns = ["arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_tacet-test"]
}

run "one_rotating_key_per_purpose" {
  command = plan
  module { source = "./modules/kms" }

  assert {
    condition     = toset(keys(aws_kms_key.this)) == toset(["ebs", "audit", "queue", "database", "secrets", "logs"])
    error_message = "A key per purpose is expected: ebs, audit, queue, database, secrets, logs."
  }
  assert {
    condition     = alltrue([for k in aws_kms_key.this : k.enable_key_rotation && k.key_usage == "ENCRYPT_DECRYPT" && !k.multi_region])
    error_message = "Every symmetric key must rotate and stay in one region."
  }
  assert {
    condition     = alltrue([for p, a in aws_kms_alias.this : a.name == "alias/tacet-test-${p}"])
    error_message = "Every key must have an alias named after its purpose."
  }
}

run "audit_signing_key_is_asymmetric" {
  command = plan
  module { source = "./modules/kms" }

  assert {
    condition     = aws_kms_key.audit_signing.key_usage == "SIGN_VERIFY" && aws_kms_key.audit_signing.customer_master_key_spec == "ECC_NIST_P256"
    error_message = "Audit manifests must be signed with an asymmetric SIGN_VERIFY key."
  }
}

run "only_the_autoscaling_role_and_logs_get_service_grants" {
  command = plan
  module { source = "./modules/kms" }

  assert {
    condition     = tolist(jsondecode(aws_kms_key.this["ebs"].policy).Statement[1].Principal.AWS) == var.ebs_service_role_arns
    error_message = "The EBS key must admit the Auto Scaling service-linked role."
  }
  assert {
    condition     = jsondecode(aws_kms_key.this["logs"].policy).Statement[1].Principal.Service == "logs.us-east-1.amazonaws.com"
    error_message = "The logs key must admit CloudWatch Logs of this region."
  }
  assert {
    condition     = alltrue([for p in ["audit", "queue", "database", "secrets"] : length(jsondecode(aws_kms_key.this[p].policy).Statement) == 1])
    error_message = "Store keys delegate to IAM only; no service principal may be named in their policy."
  }
  assert {
    condition     = alltrue([for k in aws_kms_key.this : jsondecode(k.policy).Statement[0].Principal.AWS == "arn:aws:iam::111122223333:root"])
    error_message = "Key administration must be delegated to this account only."
  }
}

run "unknown_signing_key_spec_is_refused" {
  command = plan
  module { source = "./modules/kms" }

  variables {
    audit_signing_key_spec = "SYMMETRIC_DEFAULT"
  }

  expect_failures = [var.audit_signing_key_spec]
}
