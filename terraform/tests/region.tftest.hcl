# US regions only: the root refuses any other region, and the optional SCP denies requests
# outside the allowed US regions for everyone else.

mock_provider "aws" {
  source          = "./tests/mocks"
  override_during = plan
}

run "scp_denies_every_region_but_the_us_ones" {
  command = plan
  module { source = "./modules/region_guard" }

  assert {
    condition     = jsondecode(output.policy_json).Statement[0].Effect == "Deny" && jsondecode(output.policy_json).Statement[0].Resource == "*"
    error_message = "The SCP must deny."
  }
  assert {
    condition     = tolist(jsondecode(output.policy_json).Statement[0].Condition.StringNotEquals["aws:RequestedRegion"]) == tolist(["us-east-1", "us-east-2", "us-west-1", "us-west-2"])
    error_message = "The SCP must deny every region except the US ones."
  }
  assert {
    condition     = contains(jsondecode(output.policy_json).Statement[0].NotAction, "iam:*") && !contains(jsondecode(output.policy_json).Statement[0].NotAction, "s3:*")
    error_message = "Only global services may be left out of the deny."
  }
  assert {
    condition     = length(aws_organizations_policy.this) == 0 && output.policy_id == null
    error_message = "The policy is only rendered unless create_policy is set."
  }
}

run "scp_can_be_created_and_attached" {
  command = plan
  module { source = "./modules/region_guard" }

  variables {
    create_policy = true
    target_ids    = ["ou-abcd-12345678"]
  }

  assert {
    condition     = aws_organizations_policy.this[0].type == "SERVICE_CONTROL_POLICY" && length(aws_organizations_policy_attachment.this) == 1
    error_message = "create_policy must create and attach a service control policy."
  }
}

run "scp_refuses_a_non_us_region" {
  command = plan
  module { source = "./modules/region_guard" }

  variables {
    allowed_regions = ["us-east-1", "eu-west-1"]
  }

  expect_failures = [var.allowed_regions]
}
