# modules/network: private subnets with no way out but VPC endpoints, public subnets only for
# the load balancer, a closed default security group and encrypted flow logs.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

variables {
  name                  = "tacet-test"
  availability_zones    = ["us-east-1a", "us-east-1b", "us-east-1c"]
  flow_logs_kms_key_arn = "arn:aws:kms:us-east-1:111122223333:key/33333333-3333-4333-8333-333333333333"
}

run "private_subnets_have_no_route_out" {
  command = plan
  module { source = "./modules/network" }

  assert {
    condition     = length(aws_subnet.private) == 3 && alltrue([for s in aws_subnet.private : s.map_public_ip_on_launch == false])
    error_message = "One private subnet per zone, none handing out public addresses."
  }
  assert {
    condition     = length(aws_route.public_internet) == 1 && aws_route.public_internet[0].route_table_id == aws_route_table.public[0].id
    error_message = "The only route to the internet must belong to the public route table."
  }
  assert {
    condition     = length(aws_route_table.private.route) == 0
    error_message = "The private route table must hold no route (no NAT, no default route)."
  }
  assert {
    condition     = alltrue([for a in aws_route_table_association.private : a.route_table_id == aws_route_table.private.id])
    error_message = "Every private subnet must use the private route table."
  }
  assert {
    condition     = aws_vpc_endpoint.s3.vpc_endpoint_type == "Gateway" && aws_vpc_endpoint.s3.route_table_ids == toset([aws_route_table.private.id])
    error_message = "S3 must be reached through a gateway endpoint on the private route table."
  }
}

run "public_subnets_exist_only_for_the_load_balancer" {
  command = plan
  module { source = "./modules/network" }

  assert {
    condition     = length(aws_subnet.public) == 3 && alltrue([for s in aws_subnet.public : s.map_public_ip_on_launch == false])
    error_message = "Public subnets must not hand out public addresses to instances."
  }
  assert {
    condition     = length(aws_internet_gateway.this) == 1
    error_message = "An internet-facing load balancer needs the internet gateway."
  }
}

run "private_only_vpc_has_no_internet_gateway" {
  command = plan
  module { source = "./modules/network" }

  variables {
    public_load_balancer = false
  }

  assert {
    condition     = length(aws_subnet.public) == 0 && length(aws_internet_gateway.this) == 0 && length(aws_route.public_internet) == 0
    error_message = "Without a public load balancer there must be no public subnet, internet gateway or route."
  }
}

run "endpoints_cover_every_service_the_gateway_calls" {
  command = plan
  module { source = "./modules/network" }

  assert {
    condition     = toset(keys(aws_vpc_endpoint.interface)) == toset(["kms", "ssm", "ssmmessages", "ec2messages", "sqs", "sts", "secretsmanager", "logs"])
    error_message = "Interface endpoints for KMS, SSM (3), SQS, STS, Secrets Manager and Logs are required."
  }
  assert {
    condition     = alltrue([for e in aws_vpc_endpoint.interface : e.private_dns_enabled && e.service_name == "com.amazonaws.us-east-1.${split(".", e.service_name)[3]}"])
    error_message = "Interface endpoints must use private DNS and this region's service names."
  }
  assert {
    condition = alltrue([for svc in ["kms", "ssm", "sqs", "sts", "secretsmanager", "logs"] :
    jsondecode(aws_vpc_endpoint.interface[svc].policy).Statement[0].Condition.StringEquals["aws:PrincipalAccount"] == "111122223333"])
    error_message = "Endpoint policies must admit this account's principals only."
  }
  assert {
    condition     = jsondecode(aws_vpc_endpoint.s3.policy).Statement[0].Condition.StringEquals["aws:PrincipalAccount"] == "111122223333"
    error_message = "The S3 endpoint policy must admit this account's principals only."
  }
  assert {
    condition     = aws_vpc_security_group_ingress_rule.endpoints_https.cidr_ipv4 == "10.40.0.0/16" && aws_vpc_security_group_ingress_rule.endpoints_https.from_port == 443
    error_message = "Endpoints must admit HTTPS from the VPC range only."
  }
}

run "default_security_group_is_closed_and_flow_logs_are_encrypted" {
  command = plan
  module { source = "./modules/network" }

  assert {
    condition     = aws_default_security_group.this.vpc_id == aws_vpc.this.id
    error_message = "The VPC's default security group must be managed (and so emptied of its rules)."
  }
  assert {
    condition     = aws_cloudwatch_log_group.flow.kms_key_id == var.flow_logs_kms_key_arn && aws_cloudwatch_log_group.flow.retention_in_days >= 365
    error_message = "Flow logs must be encrypted with the customer key and kept at least a year."
  }
  assert {
    condition     = aws_flow_log.this.traffic_type == "ALL"
    error_message = "Flow logs must record accepted and rejected traffic."
  }
}

run "single_zone_is_refused" {
  command = plan
  module { source = "./modules/network" }

  variables {
    availability_zones = ["us-east-1a"]
  }

  expect_failures = [var.availability_zones]
}

run "unencrypted_flow_logs_are_refused" {
  command = plan
  module { source = "./modules/network" }

  variables {
    flow_logs_kms_key_arn = "alias/aws/logs"
  }

  expect_failures = [var.flow_logs_kms_key_arn]
}
