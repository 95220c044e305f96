# Shared values of the mocked AWS provider (`mock_provider "aws" { source = "./tests/mocks" }`).
# Computed attributes get realistic shapes so that the modules' own validations (ARN formats,
# vpce-/pl- ids) hold when one module's outputs feed another at plan time.

mock_data "aws_caller_identity" {
  defaults = {
    account_id = "111122223333"
    arn        = "arn:aws:iam::111122223333:user/terraform-test"
  }
}

mock_data "aws_partition" {
  defaults = {
    partition  = "aws"
    dns_suffix = "amazonaws.com"
  }
}

mock_data "aws_region" {
  defaults = {
    name = "us-east-1"
  }
}

mock_data "aws_availability_zones" {
  defaults = {
    names = ["us-east-1a", "us-east-1b", "us-east-1c", "us-east-1d"]
  }
}

mock_resource "aws_kms_key" {
  defaults = {
    arn    = "arn:aws:kms:us-east-1:111122223333:key/00000000-0000-4000-8000-000000000000"
    key_id = "00000000-0000-4000-8000-000000000000"
  }
}

mock_resource "aws_vpc" {
  defaults = {
    id = "vpc-0123456789abcdef0"
  }
}

mock_resource "aws_subnet" {
  defaults = {
    id = "subnet-0123456789abcdef0"
  }
}

mock_resource "aws_security_group" {
  defaults = {
    id = "sg-0123456789abcdef0"
  }
}

mock_resource "aws_vpc_endpoint" {
  defaults = {
    id             = "vpce-0123456789abcdef0"
    prefix_list_id = "pl-63a5400a"
  }
}

mock_resource "aws_cloudwatch_log_group" {
  defaults = {
    arn = "arn:aws:logs:us-east-1:111122223333:log-group:/tacet/vpc-flow-logs"
  }
}

mock_resource "aws_iam_role" {
  defaults = {
    arn = "arn:aws:iam::111122223333:role/tacet-test"
  }
}

mock_resource "aws_iam_service_linked_role" {
  defaults = {
    arn = "arn:aws:iam::111122223333:role/aws-service-role/autoscaling.amazonaws.com/AWSServiceRoleForAutoScaling_tacet-test"
  }
}

mock_resource "aws_sqs_queue" {
  defaults = {
    arn = "arn:aws:sqs:us-east-1:111122223333:tacet-test-jobs"
    url = "https://sqs.us-east-1.amazonaws.com/111122223333/tacet-test-jobs"
  }
}

mock_resource "aws_secretsmanager_secret" {
  defaults = {
    arn = "arn:aws:secretsmanager:us-east-1:111122223333:secret:tacet-test-AbCdEf"
  }
}

mock_resource "aws_db_instance" {
  defaults = {
    resource_id = "db-ABCDEFGHIJKLMNOPQRSTUVWXYZ"
    address     = "tacet-test.abcdefghijkl.us-east-1.rds.amazonaws.com"
    arn         = "arn:aws:rds:us-east-1:111122223333:db:tacet-test"
  }
}

mock_resource "aws_lb" {
  defaults = {
    arn      = "arn:aws:elasticloadbalancing:us-east-1:111122223333:loadbalancer/net/tacet-test-nlb/0123456789abcdef"
    dns_name = "tacet-test-nlb-0123456789abcdef.elb.us-east-1.amazonaws.com"
  }
}

mock_resource "aws_lb_target_group" {
  defaults = {
    arn = "arn:aws:elasticloadbalancing:us-east-1:111122223333:targetgroup/tacet-test-gateway/0123456789abcdef"
  }
}

mock_resource "aws_launch_template" {
  defaults = {
    id             = "lt-0123456789abcdef0"
    latest_version = 1
  }
}

mock_resource "aws_route_table" {
  defaults = {
    id = "rtb-0123456789abcdef0"
  }
}

mock_resource "aws_internet_gateway" {
  defaults = {
    id = "igw-0123456789abcdef0"
  }
}
