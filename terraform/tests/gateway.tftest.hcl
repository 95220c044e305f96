# modules/gateway: launch template hardening, GPU-only instance types, security group rules,
# TCP passthrough on 443, and the cloud-init contract with infra/.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  name                         = "tacet-test"
  vpc_id                       = "vpc-0123456789abcdef0"
  vpc_cidr_block               = "10.40.0.0/16"
  private_subnet_ids           = ["subnet-0aaaaaaaaaaaaaaaa", "subnet-0bbbbbbbbbbbbbbbb"]
  load_balancer_subnet_ids     = ["subnet-0cccccccccccccccc", "subnet-0dddddddddddddddd"]
  s3_prefix_list_id            = "pl-63a5400a"
  ami_id                       = "ami-0123456789abcdef0"
  instance_profile_name        = "tacet-test-gateway"
  autoscaling_service_role_arn = "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_tacet-test"
  ebs_kms_key_arn              = "arn:aws:kms:us-east-1:111122223333:key/11111111-1111-4111-8111-111111111111"
  tacet_version                = "0.1.0"
  weights_s3_uri               = "s3://tacet-weights/llada-8b"
  tls_secret_arn               = "arn:aws:secretsmanager:us-east-1:111122223333:secret:tacet-test/tls-AbCdEf"
  pepper_secret_arn            = "arn:aws:secretsmanager:us-east-1:111122223333:secret:tacet-test/pepper-AbCdEf"
  database_url_secret_arn      = "arn:aws:secretsmanager:us-east-1:111122223333:secret:tacet-test/database_url-AbCdEf"
  audit_bucket                 = "tacet-test-audit"
  audit_signing_key_arn        = "arn:aws:kms:us-east-1:111122223333:key/22222222-2222-4222-8222-222222222222"
  queue_url                    = "https://sqs.us-east-1.amazonaws.com/111122223333/tacet-test-jobs"
  user_data_template_path      = "./tests/fixtures/gateway.yaml.tftpl"
  systemd_units_dir            = "./tests/fixtures/systemd"
}

run "launch_template_is_hardened" {
  command = plan
  module { source = "./modules/gateway" }

  assert {
    condition     = aws_launch_template.this.metadata_options[0].http_tokens == "required"
    error_message = "IMDSv2 must be required (http_tokens = required)."
  }
  assert {
    condition     = aws_launch_template.this.metadata_options[0].http_put_response_hop_limit == 1
    error_message = "The metadata hop limit must be 1."
  }
  assert {
    condition     = aws_launch_template.this.key_name == null
    error_message = "No key pair: access is through SSM only."
  }
  assert {
    condition     = aws_launch_template.this.network_interfaces[0].associate_public_ip_address == "false"
    error_message = "Instances must not get a public IP address."
  }
  assert {
    condition     = aws_launch_template.this.hibernation_options[0].configured == false
    error_message = "Hibernation writes memory to disk and must stay off."
  }
  assert {
    condition     = aws_launch_template.this.block_device_mappings[0].ebs[0].encrypted == "true"
    error_message = "The root volume must be encrypted."
  }
  assert {
    condition     = aws_launch_template.this.block_device_mappings[0].ebs[0].kms_key_id == var.ebs_kms_key_arn
    error_message = "The root volume must use the customer-managed EBS key."
  }
  assert {
    condition     = aws_launch_template.this.iam_instance_profile[0].name == "tacet-test-gateway"
    error_message = "The launch template must attach the gateway instance profile."
  }
}

run "instances_live_in_private_subnets_across_zones" {
  command = plan
  module { source = "./modules/gateway" }

  assert {
    condition     = toset(aws_autoscaling_group.this.vpc_zone_identifier) == toset(var.private_subnet_ids)
    error_message = "The group must launch into the private subnets only."
  }
  assert {
    condition     = [for o in aws_autoscaling_group.this.mixed_instances_policy[0].launch_template[0].override : o.instance_type] == ["g6e.xlarge", "g6e.2xlarge"]
    error_message = "The group must offer the configured GPU instance types, in order."
  }
  assert {
    condition     = aws_autoscaling_group.this.health_check_type == "ELB"
    error_message = "Instances must be replaced when the load balancer finds them unhealthy."
  }
}

run "load_balancer_passes_tls_through_on_443" {
  command = plan
  module { source = "./modules/gateway" }

  assert {
    condition     = aws_lb.this.load_balancer_type == "network" && aws_lb.this.internal == false
    error_message = "An internet-facing network load balancer is expected."
  }
  assert {
    condition     = aws_lb_listener.this.port == 443 && aws_lb_listener.this.protocol == "TCP"
    error_message = "The listener must be TCP:443 so that TLS ends on the instance."
  }
  assert {
    condition     = aws_lb_target_group.this.protocol == "TCP" && aws_lb_target_group.this.port == 8443
    error_message = "The target group must forward TCP to the gateway port."
  }
  assert {
    condition     = aws_lb_target_group.this.health_check[0].protocol == "HTTPS" && aws_lb_target_group.this.health_check[0].path == "/readyz"
    error_message = "Health checks must poll /readyz over HTTPS."
  }
}

run "no_ingress_from_anywhere_except_443_on_the_load_balancer" {
  command = plan
  module { source = "./modules/gateway" }

  # The load balancer admits the world on 443 only.
  assert {
    condition = alltrue([
      for r in aws_vpc_security_group_ingress_rule.load_balancer_https :
      r.from_port == 443 && r.to_port == 443 && r.ip_protocol == "tcp"
    ])
    error_message = "The load balancer may admit clients on TCP 443 only."
  }
  # Instances admit nothing by address: only the load balancer's security group, on the gateway port.
  assert {
    condition = (
      aws_vpc_security_group_ingress_rule.instance_from_load_balancer.cidr_ipv4 == null &&
      aws_vpc_security_group_ingress_rule.instance_from_load_balancer.from_port == 8443 &&
      aws_vpc_security_group_ingress_rule.instance_from_load_balancer.to_port == 8443
    )
    error_message = "Instances must admit only the load balancer, on the gateway port."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.instance_from_load_balancer.referenced_security_group_id == aws_security_group.load_balancer.id
    error_message = "The instance rule must reference the load balancer's security group."
  }
  # Egress stays inside the VPC or goes to S3 through its prefix list.
  assert {
    condition = alltrue([
      for r in [
        aws_vpc_security_group_egress_rule.instance_to_endpoints,
        aws_vpc_security_group_egress_rule.instance_to_database,
      ] : r.cidr_ipv4 == var.vpc_cidr_block
    ])
    error_message = "Instance egress by address must stay inside the VPC."
  }
  assert {
    condition     = aws_vpc_security_group_egress_rule.instance_to_s3.prefix_list_id == var.s3_prefix_list_id
    error_message = "S3 must be reached through its prefix list (the gateway endpoint)."
  }
}

run "narrowed_client_ranges_reach_the_host_firewall" {
  command = plan
  module { source = "./modules/gateway" }

  variables {
    allowed_client_cidrs = ["198.51.100.0/24", "203.0.113.0/24"]
  }

  assert {
    condition     = [for r in aws_vpc_security_group_ingress_rule.load_balancer_https : r.cidr_ipv4] == ["198.51.100.0/24", "203.0.113.0/24"]
    error_message = "Each client range must get its own 443 rule on the load balancer."
  }
  assert {
    condition     = strcontains(output.user_data, "TACET_ALLOWED_CIDRS=198.51.100.0/24,203.0.113.0/24,10.40.0.0/16")
    error_message = "The host firewall must admit the client ranges and the VPC (health checks)."
  }
}

run "user_data_renders_every_contract_variable" {
  command = plan
  module { source = "./modules/gateway" }

  assert {
    condition     = startswith(output.user_data, "#cloud-config")
    error_message = "User data must be a cloud-config document."
  }
  assert {
    condition = alltrue([for line in [
      "TACET_REGION=us-east-1",
      "TACET_PORT=8443",
      "TACET_TLS_SECRET_ARN=${var.tls_secret_arn}",
      "TACET_PEPPER_SECRET_ARN=${var.pepper_secret_arn}",
      "TACET_DATABASE_URL_SECRET_ARN=${var.database_url_secret_arn}",
      "TACET_AUDIT_BUCKET=tacet-test-audit",
      "TACET_AUDIT_SIGNING_KEY_ARN=${var.audit_signing_key_arn}",
      "TACET_QUEUE_URL=${var.queue_url}",
      "TACET_WEIGHTS_S3_URI=s3://tacet-weights/llada-8b",
      "TACET_VERSION=0.1.0",
      "TACET_HOST_ENGINES=auto",
    ] : strcontains(output.user_data, line)])
    error_message = "Every template variable must reach the rendered user data."
  }
  assert {
    condition = alltrue([for unit in ["tacet-gateway.service", "tacet-engine@.service", "tacet-worker.service"] :
    strcontains(output.user_data, "/etc/systemd/system/${unit}")])
    error_message = "Every unit file must be written under /etc/systemd/system/."
  }
  assert {
    condition     = aws_launch_template.this.user_data == base64gzip(output.user_data)
    error_message = "The launch template must carry the rendered document, gzip-compressed."
  }
}

run "renders_the_repository_template_by_default" {
  command = plan
  module { source = "./modules/gateway" }

  variables {
    user_data_template_path = null
    systemd_units_dir       = null
  }

  assert {
    condition     = startswith(output.user_data, "#cloud-config")
    error_message = "infra/cloud-init/gateway.yaml.tftpl must render to a cloud-config document."
  }
  assert {
    condition     = strcontains(output.user_data, var.tls_secret_arn) && strcontains(output.user_data, var.queue_url)
    error_message = "The repository template must use the contract variables."
  }
  assert {
    condition     = strcontains(output.user_data, "/etc/systemd/system/tacet-gateway.service")
    error_message = "The repository template must write the units from infra/systemd."
  }
}

run "imdsv1_cannot_be_enabled" {
  command = plan
  module { source = "./modules/gateway" }

  variables {
    imds_http_tokens = "optional"
  }

  expect_failures = [var.imds_http_tokens]
}

run "metadata_hop_limit_cannot_be_raised" {
  command = plan
  module { source = "./modules/gateway" }

  variables {
    imds_hop_limit = 2
  }

  expect_failures = [var.imds_hop_limit]
}

run "non_gpu_instance_type_is_refused" {
  command = plan
  module { source = "./modules/gateway" }

  variables {
    instance_types = ["g6e.xlarge", "m7i.large"]
  }

  expect_failures = [var.instance_types]
}

run "aws_managed_ebs_key_is_refused" {
  command = plan
  module { source = "./modules/gateway" }

  variables {
    ebs_kms_key_arn = "alias/aws/ebs"
  }

  expect_failures = [var.ebs_kms_key_arn]
}

run "missing_unit_files_are_refused" {
  command = plan
  module { source = "./modules/gateway" }

  variables {
    systemd_units_dir = "./tests/fixtures"
  }

  expect_failures = [aws_launch_template.this]
}

run "non_us_region_is_refused" {
  command = plan
  module { source = "./modules/gateway" }

  override_data {
    target = data.aws_region.current
    values = { name = "eu-west-1" }
  }

  expect_failures = [aws_launch_template.this]
}

run "one_engine_per_gpu_on_multi_gpu_types" {
  command = plan
  module { source = "./modules/gateway" }

  variables {
    instance_types = ["p5.48xlarge", "g6e.12xlarge", "g6e.xlarge", "p5.4xlarge", "p4d.24xlarge"]
  }

  assert {
    condition = output.engines_per_instance == {
      "p5.48xlarge" = 8, "g6e.12xlarge" = 4, "g6e.xlarge" = 1, "p5.4xlarge" = 1, "p4d.24xlarge" = 8
    }
    error_message = "Each GPU of an instance must get an engine."
  }
  assert {
    condition     = strcontains(output.user_data, "TACET_HOST_ENGINES=auto")
    error_message = "Hosts must start one engine per GPU they find (auto)."
  }
}

run "single_engine_on_single_gpu_types" {
  command = plan
  module { source = "./modules/gateway" }

  variables {
    single_engine = true
  }

  assert {
    condition     = strcontains(output.user_data, "TACET_HOST_ENGINES=1")
    error_message = "single_engine must start exactly one engine per host."
  }
  assert {
    condition     = values(output.engines_per_instance) == [1, 1]
    error_message = "single_engine means one engine on every instance type."
  }
}

run "single_engine_refuses_multi_gpu_types" {
  command = plan
  module { source = "./modules/gateway" }

  variables {
    single_engine  = true
    instance_types = ["g6e.xlarge", "p5.48xlarge"]
  }

  expect_failures = [var.single_engine]
}
