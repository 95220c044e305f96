terraform {
  # 1.9: input validations may refer to other variables.
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Below 6.0 on purpose: provider 6 adds a per-resource `region` argument that would
      # bypass the US-only checks made on the provider's region.
      version = "~> 5.100"
    }
  }
}
