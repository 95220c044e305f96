terraform {
  required_version = ">= 1.9.0"

  required_providers {
    aws = {
      source = "hashicorp/aws"
      # Below 6.0 on purpose: provider 6 adds a per-resource `region` argument that would
      # bypass the US-only validation of var.region.
      version = "~> 5.100"
    }
  }

  # Partial configuration: `terraform init -backend-config=backend.hcl` supplies the bucket,
  # key, region and KMS key of an encrypted, versioned state bucket (see README).
  backend "s3" {}
}

provider "aws" {
  region              = var.region
  allowed_account_ids = var.allowed_account_ids

  default_tags {
    tags = merge(var.tags, {
      Application = "tacet"
      Environment = "prod"
      ManagedBy   = "terraform"
    })
  }
}
