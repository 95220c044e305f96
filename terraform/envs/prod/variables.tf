variable "region" {
  description = "AWS region of the deployment; US regions only."
  type        = string
  default     = "us-east-1"

  validation {
    condition     = contains(["us-east-1", "us-east-2", "us-west-1", "us-west-2"], var.region)
    error_message = "region must be one of the allowed US regions: us-east-1, us-east-2, us-west-1, us-west-2."
  }
}

variable "allowed_account_ids" {
  description = "AWS account ids this configuration may ever touch; the provider refuses any other account."
  type        = list(string)

  validation {
    condition     = length(var.allowed_account_ids) > 0 && alltrue([for id in var.allowed_account_ids : can(regex("^[0-9]{12}$", id))])
    error_message = "allowed_account_ids must list at least one 12-digit AWS account id."
  }
}

variable "name" {
  description = "Prefix of every resource name."
  type        = string
  default     = "tacet-prod"
}

variable "availability_zones" {
  description = "Zones to spread subnets, instances and the database standby over (2-4); null takes the first availability_zone_count of the region's a-f zones."
  type        = list(string)
  default     = null

  validation {
    condition = var.availability_zones == null || (
      length(coalesce(var.availability_zones, [])) >= 2 && length(coalesce(var.availability_zones, [])) <= 4 &&
      alltrue([for z in coalesce(var.availability_zones, []) : startswith(z, var.region)])
    )
    error_message = "availability_zones must list 2 to 4 zones of the chosen region (or be null)."
  }
}

variable "availability_zone_count" {
  description = "How many zones to use when availability_zones is null (2-4)."
  type        = number
  default     = 3

  validation {
    condition     = var.availability_zone_count >= 2 && var.availability_zone_count <= 4
    error_message = "availability_zone_count must be between 2 and 4."
  }
}

variable "vpc_cidr_block" {
  description = "IPv4 range of the VPC."
  type        = string
  default     = "10.40.0.0/16"
}

variable "allowed_client_cidrs" {
  description = "IPv4 ranges of member systems allowed to reach the load balancer on 443."
  type        = list(string)
  default     = ["0.0.0.0/0"]
}

variable "ami_id" {
  description = "Golden GPU AMI (NVIDIA driver, CUDA, Tacet, host baseline)."
  type        = string
}

variable "instance_types" {
  description = "GPU instance types of the gateway group, in order of preference."
  type        = list(string)
  default     = ["g6e.xlarge", "g6e.2xlarge"]
}

variable "single_engine" {
  description = "One engine per host instead of one per GPU; then only single-GPU instance types are accepted."
  type        = bool
  default     = false
}

variable "min_size" {
  description = "Fewest gateway instances."
  type        = number
  default     = 2
}

variable "max_size" {
  description = "Most gateway instances."
  type        = number
  default     = 6
}

variable "desired_capacity" {
  description = "Gateway instances to start with."
  type        = number
  default     = 2
}

variable "tacet_version" {
  description = "Tacet release the instances run."
  type        = string
}

variable "weights_s3_uri" {
  description = "s3://bucket/prefix of the model directory."
  type        = string
}

variable "weights_kms_key_arn" {
  description = "KMS key of the weights bucket when it uses SSE-KMS, else null."
  type        = string
  default     = null
}

variable "audit_bucket_name" {
  description = "Name of the audit bucket; null derives `<name>-audit-<account id>-<region>`."
  type        = string
  default     = null
}

variable "audit_retention_days" {
  description = "Object Lock retention of audit exports, in days (2190 for HIPAA customers)."
  type        = number
  default     = 365
}

variable "db_instance_class" {
  description = "RDS instance class of the control-plane database."
  type        = string
  default     = "db.r6g.large"
}

variable "manage_account_defaults" {
  description = "Also set this region's account-wide defaults: EBS encryption on, IMDSv2 required, serial console off."
  type        = bool
  default     = true
}

variable "create_region_scp" {
  description = "Create the US-regions-only service control policy (needs the Organizations management account)."
  type        = bool
  default     = false
}

variable "region_scp_target_ids" {
  description = "Organization root, OU or account ids to attach the region policy to."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to every resource (on top of Application, Environment, ManagedBy)."
  type        = map(string)
  default     = {}
}
