variable "name" {
  description = "Prefix of the queue names, e.g. `tacet-prod` gives `tacet-prod-jobs` and `tacet-prod-jobs-dlq`."
  type        = string

  validation {
    condition     = can(regex("^[a-zA-Z0-9_-]{1,70}$", var.name))
    error_message = "name must be 1-70 letters, digits, hyphens or underscores."
  }
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key ARN that encrypts both queues."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be a customer-managed KMS key ARN (arn:...:key/...), not an alias or an AWS-managed key."
  }
}

variable "message_retention_seconds" {
  description = "How long an unprocessed shard message stays on the jobs queue (60 s to 14 days)."
  type        = number
  default     = 345600

  validation {
    condition     = var.message_retention_seconds >= 60 && var.message_retention_seconds <= 1209600
    error_message = "message_retention_seconds must be between 60 and 1209600."
  }
}

variable "visibility_timeout_seconds" {
  description = "Time a worker has to finish a shard before another worker may take it."
  type        = number
  default     = 900

  validation {
    condition     = var.visibility_timeout_seconds >= 0 && var.visibility_timeout_seconds <= 43200
    error_message = "visibility_timeout_seconds must be between 0 and 43200."
  }
}

variable "max_receive_count" {
  description = "Deliveries of one message before it moves to the dead-letter queue."
  type        = number
  default     = 5

  validation {
    condition     = var.max_receive_count >= 1 && var.max_receive_count <= 1000
    error_message = "max_receive_count must be between 1 and 1000."
  }
}

variable "tags" {
  description = "Tags added to both queues."
  type        = map(string)
  default     = {}
}
