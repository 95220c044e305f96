variable "bucket_name" {
  description = "Globally unique name of the audit bucket."
  type        = string

  validation {
    condition     = can(regex("^[a-z0-9][a-z0-9.-]{1,61}[a-z0-9]$", var.bucket_name)) && !can(regex("\\.\\.|^xn--|-s3alias$", var.bucket_name))
    error_message = "bucket_name must be a valid S3 bucket name (3-63 lowercase letters, digits, dots, hyphens)."
  }
}

variable "environment" {
  description = "`prod` locks objects in COMPLIANCE mode (nobody, not even root, can shorten retention); `dev` uses GOVERNANCE so test buckets can be emptied."
  type        = string

  validation {
    condition     = contains(["prod", "dev"], var.environment)
    error_message = "environment must be \"prod\" or \"dev\"."
  }
}

variable "retention_days" {
  description = "Default Object Lock retention of every audit object, in days (12 months or more suits SOC 2 samples; HIPAA customers usually need 2190)."
  type        = number
  default     = 365

  validation {
    condition     = var.retention_days >= 1 && var.retention_days <= 36500 && floor(var.retention_days) == var.retention_days
    error_message = "retention_days must be a whole number of days between 1 and 36500."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key ARN for SSE-KMS of every object."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be a customer-managed KMS key ARN (arn:...:key/...), not an alias or an AWS-managed key."
  }
}

variable "writer_vpc_endpoint_ids" {
  description = "S3 VPC endpoints through which objects may be written; writes from anywhere else are denied."
  type        = list(string)

  validation {
    condition     = length(var.writer_vpc_endpoint_ids) > 0 && alltrue([for id in var.writer_vpc_endpoint_ids : can(regex("^vpce-[0-9a-z]+$", id))])
    error_message = "writer_vpc_endpoint_ids must list at least one VPC endpoint id (vpce-...)."
  }
}

variable "tags" {
  description = "Tags added to the bucket."
  type        = map(string)
  default     = {}
}
