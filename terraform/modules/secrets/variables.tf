variable "name" {
  description = "Prefix of the secret names, e.g. `tacet-prod` gives `tacet-prod/tls`."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9/_+=.@-]{1,400}$", var.name))
    error_message = "name must use the characters Secrets Manager allows in names."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key ARN that encrypts every secret."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be a customer-managed KMS key ARN (arn:...:key/...), not an alias or an AWS-managed key."
  }
}

variable "recovery_window_in_days" {
  description = "Days a deleted secret can still be restored (7-30)."
  type        = number
  default     = 30

  validation {
    condition     = var.recovery_window_in_days >= 7 && var.recovery_window_in_days <= 30
    error_message = "recovery_window_in_days must be between 7 and 30."
  }
}

variable "tags" {
  description = "Tags added to every secret."
  type        = map(string)
  default     = {}
}
