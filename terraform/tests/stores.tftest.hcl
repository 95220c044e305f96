# modules/queue, modules/database, modules/secrets: every store is encrypted with a customer
# key, and an AWS-managed key (or none) is refused.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

run "queues_are_encrypted_and_tls_only" {
  command = plan
  module { source = "./modules/queue" }

  variables {
    name        = "tacet-test"
    kms_key_arn = "arn:aws:kms:us-east-1:111122223333:key/55555555-5555-4555-8555-555555555555"
  }

  assert {
    condition     = aws_sqs_queue.this.kms_master_key_id == var.kms_key_arn && aws_sqs_queue.dlq.kms_master_key_id == var.kms_key_arn
    error_message = "Both queues must be encrypted with the customer-managed key."
  }
  assert {
    condition     = jsondecode(aws_sqs_queue.this.redrive_policy).deadLetterTargetArn == aws_sqs_queue.dlq.arn && jsondecode(aws_sqs_queue.this.redrive_policy).maxReceiveCount == 5
    error_message = "The jobs queue must dead-letter after 5 receives."
  }
  assert {
    condition = alltrue([for p in [aws_sqs_queue_policy.this.policy, aws_sqs_queue_policy.dlq.policy] :
    jsondecode(p).Statement[0].Effect == "Deny" && jsondecode(p).Statement[0].Condition.Bool["aws:SecureTransport"] == "false"])
    error_message = "Both queues must deny requests without TLS."
  }
}

run "queue_without_customer_key_is_refused" {
  command = plan
  module { source = "./modules/queue" }

  variables {
    name        = "tacet-test"
    kms_key_arn = "alias/aws/sqs"
  }

  expect_failures = [var.kms_key_arn]
}

run "database_is_private_encrypted_and_iam_authenticated" {
  command = plan
  module { source = "./modules/database" }

  variables {
    name                      = "tacet-test"
    vpc_id                    = "vpc-0123456789abcdef0"
    subnet_ids                = ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
    client_security_group_ids = ["sg-0aaaaaaaaaaaaaaaa"]
    kms_key_arn               = "arn:aws:kms:us-east-1:111122223333:key/66666666-6666-4666-8666-666666666666"
  }

  assert {
    condition     = aws_db_instance.this.storage_encrypted && aws_db_instance.this.kms_key_id == var.kms_key_arn
    error_message = "Storage must be encrypted with the customer-managed key."
  }
  assert {
    condition     = aws_db_instance.this.performance_insights_kms_key_id == var.kms_key_arn && aws_db_instance.this.master_user_secret_kms_key_id == var.kms_key_arn
    error_message = "Performance Insights and the master secret must use the customer-managed key too."
  }
  assert {
    condition     = aws_db_instance.this.publicly_accessible == false && aws_db_instance.this.iam_database_authentication_enabled
    error_message = "The database must be private with IAM authentication on."
  }
  assert {
    condition     = aws_db_instance.this.deletion_protection && aws_db_instance.this.manage_master_user_password && aws_db_instance.this.skip_final_snapshot == false
    error_message = "Deletion protection, an RDS-managed master password and a final snapshot are required."
  }
  assert {
    condition     = one([for p in aws_db_parameter_group.this.parameter : p.value if p.name == "rds.force_ssl"]) == "1"
    error_message = "The database must refuse connections without TLS."
  }
  assert {
    condition     = length(aws_vpc_security_group_ingress_rule.clients) == 1 && aws_vpc_security_group_ingress_rule.clients[0].referenced_security_group_id == "sg-0aaaaaaaaaaaaaaaa" && aws_vpc_security_group_ingress_rule.clients[0].cidr_ipv4 == null
    error_message = "Only the gateway security group may reach PostgreSQL."
  }
}

run "database_without_customer_key_is_refused" {
  command = plan
  module { source = "./modules/database" }

  variables {
    name        = "tacet-test"
    vpc_id      = "vpc-0123456789abcdef0"
    subnet_ids  = ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
    kms_key_arn = "alias/aws/rds"
  }

  expect_failures = [var.kms_key_arn]
}

run "secrets_are_encrypted_and_hold_no_value" {
  command = plan
  module { source = "./modules/secrets" }

  variables {
    name        = "tacet-test"
    kms_key_arn = "arn:aws:kms:us-east-1:111122223333:key/77777777-7777-4777-8777-777777777777"
  }

  assert {
    condition     = toset(keys(aws_secretsmanager_secret.this)) == toset(["tls", "pepper", "database_url"])
    error_message = "The gateway needs exactly the tls, pepper and database_url secrets."
  }
  assert {
    condition     = alltrue([for s in aws_secretsmanager_secret.this : s.kms_key_id == var.kms_key_arn])
    error_message = "Every secret must be encrypted with the customer-managed key."
  }
}

run "secrets_without_customer_key_are_refused" {
  command = plan
  module { source = "./modules/secrets" }

  variables {
    name        = "tacet-test"
    kms_key_arn = "alias/aws/secretsmanager"
  }

  expect_failures = [var.kms_key_arn]
}
