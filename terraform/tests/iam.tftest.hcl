# modules/iam: the instance role may read the weights, write audit objects, use the queue, sign
# with the audit key, read its own secrets and connect to its database; nothing else.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  name                  = "tacet-test"
  weights_s3_uri        = "s3://tacet-weights/models/llada-8b/"
  audit_bucket_arn      = "arn:aws:s3:::tacet-test-audit"
  audit_kms_key_arn     = "arn:aws:kms:us-east-1:111122223333:key/44444444-4444-4444-8444-444444444444"
  audit_signing_key_arn = "arn:aws:kms:us-east-1:111122223333:key/22222222-2222-4222-8222-222222222222"
  queue_arn             = "arn:aws:sqs:us-east-1:111122223333:tacet-test-jobs"
  queue_kms_key_arn     = "arn:aws:kms:us-east-1:111122223333:key/55555555-5555-4555-8555-555555555555"
  secret_arns           = ["arn:aws:secretsmanager:us-east-1:111122223333:secret:tacet-test/tls-AbCdEf"]
  secrets_kms_key_arn   = "arn:aws:kms:us-east-1:111122223333:key/77777777-7777-4777-8777-777777777777"
  database_resource_id  = "db-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
  database_iam_user     = "tacet_gateway"
}

run "role_grants_exactly_the_listed_actions" {
  command = plan
  module { source = "./modules/iam" }

  assert {
    condition = toset(flatten([for s in jsondecode(aws_iam_role_policy.gateway.policy).Statement : s.Action])) == toset([
      "s3:GetObject", "s3:ListBucket", "s3:PutObject",
      "kms:GenerateDataKey", "kms:Decrypt", "kms:Sign", "kms:GetPublicKey",
      "sqs:SendMessage", "sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:ChangeMessageVisibility", "sqs:GetQueueAttributes", "sqs:GetQueueUrl",
      "secretsmanager:GetSecretValue", "rds-db:connect",
    ])
    error_message = "The instance role must grant exactly the actions the gateway needs."
  }
  assert {
    condition = alltrue([for s in jsondecode(aws_iam_role_policy.gateway.policy).Statement :
    s.Effect == "Allow" && alltrue([for a in s.Action : !strcontains(a, "*")]) && alltrue([for r in s.Resource : r != "*"])])
    error_message = "No wildcard action and no wildcard resource."
  }
  assert {
    condition     = aws_iam_role_policy_attachment.ssm_core.policy_arn == "arn:aws:iam::aws:policy/AmazonSSMManagedInstanceCore"
    error_message = "The SSM core policy (instead of SSH) must be attached."
  }
}

run "resources_are_scoped" {
  command = plan
  module { source = "./modules/iam" }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.gateway.policy).Statement : s.Resource if s.Sid == "ReadModelWeights"]) == ["arn:aws:s3:::tacet-weights/models/llada-8b/*"]
    error_message = "Weights may be read under the model prefix only."
  }
  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.gateway.policy).Statement : s.Resource if s.Sid == "WriteAuditObjects"]) == ["arn:aws:s3:::tacet-test-audit/*"]
    error_message = "Audit objects may be written to the audit bucket only."
  }
  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.gateway.policy).Statement : s.Resource if s.Sid == "SignAuditManifests"]) == [var.audit_signing_key_arn]
    error_message = "Signing must be limited to the audit signing key."
  }
  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.gateway.policy).Statement : s.Resource if s.Sid == "ConnectToDatabase"]) == ["arn:aws:rds-db:us-east-1:111122223333:dbuser:db-ABCDEFGHIJKLMNOPQRSTUVWXYZ/tacet_gateway"]
    error_message = "rds-db:connect must name the database user."
  }
  assert {
    condition     = length([for s in jsondecode(aws_iam_role_policy.gateway.policy).Statement : s if s.Sid == "DecryptModelWeights"]) == 0
    error_message = "No weights key was given, so none may be granted."
  }
}

run "weights_key_is_granted_only_when_given" {
  command = plan
  module { source = "./modules/iam" }

  variables {
    weights_kms_key_arn = "arn:aws:kms:us-east-1:111122223333:key/88888888-8888-4888-8888-888888888888"
  }

  assert {
    condition     = one([for s in jsondecode(aws_iam_role_policy.gateway.policy).Statement : s.Resource if s.Sid == "DecryptModelWeights"]) == [var.weights_kms_key_arn]
    error_message = "The weights key must be granted for decryption when given."
  }
}

run "malformed_weights_uri_is_refused" {
  command = plan
  module { source = "./modules/iam" }

  variables {
    weights_s3_uri = "https://tacet-weights.s3.amazonaws.com/llada-8b"
  }

  expect_failures = [var.weights_s3_uri]
}
