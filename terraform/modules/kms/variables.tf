variable "name" {
  description = "Prefix of every alias and description, e.g. `tacet-prod`."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "deletion_window_in_days" {
  description = "Waiting period before a scheduled key deletion takes effect (7-30 days)."
  type        = number
  default     = 30

  validation {
    condition     = var.deletion_window_in_days >= 7 && var.deletion_window_in_days <= 30
    error_message = "deletion_window_in_days must be between 7 and 30."
  }
}

variable "rotation_period_in_days" {
  description = "Automatic rotation period of the symmetric keys (90-2560 days)."
  type        = number
  default     = 365

  validation {
    condition     = var.rotation_period_in_days >= 90 && var.rotation_period_in_days <= 2560
    error_message = "rotation_period_in_days must be between 90 and 2560."
  }
}

variable "audit_signing_key_spec" {
  description = "Key spec of the asymmetric key that signs audit export manifests."
  type        = string
  default     = "ECC_NIST_P256"

  validation {
    condition     = contains(["ECC_NIST_P256", "ECC_NIST_P384", "RSA_3072", "RSA_4096"], var.audit_signing_key_spec)
    error_message = "audit_signing_key_spec must be one of ECC_NIST_P256, ECC_NIST_P384, RSA_3072, RSA_4096."
  }
}

variable "ebs_service_role_arns" {
  description = "IAM roles (the autoscaling service-linked role) allowed to use the EBS key to launch encrypted volumes."
  type        = list(string)
  default     = []

  validation {
    condition     = alltrue([for arn in var.ebs_service_role_arns : can(regex("^arn:aws[a-z-]*:iam::[0-9]{12}:role/", arn))])
    error_message = "ebs_service_role_arns must be IAM role ARNs."
  }
}

variable "tags" {
  description = "Tags added to every key."
  type        = map(string)
  default     = {}
}
