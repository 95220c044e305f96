# This folder is the root from which `terraform test` runs tests/*.tftest.hcl: each run block
# points at a module, an environment or an example with `module { source = ... }`. Terraform
# installs providers only for a folder that holds configuration, hence this file.
terraform {
  required_version = ">= 1.11.0" # override_during = plan in the mock providers

  required_providers {
    aws = {
      source  = "hashicorp/aws"
      version = "~> 5.100"
    }
  }
}
