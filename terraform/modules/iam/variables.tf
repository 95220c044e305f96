variable "name" {
  description = "Prefix of the role, instance profile and service-linked role suffix, e.g. `tacet-prod`."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "weights_s3_uri" {
  description = "s3://bucket/prefix of the model directory; the role may read objects under this prefix only."
  type        = string

  validation {
    condition     = can(regex("^s3://[a-z0-9][a-z0-9.-]{1,61}[a-z0-9](/.*)?$", var.weights_s3_uri))
    error_message = "weights_s3_uri must look like s3://bucket/prefix."
  }
}

variable "weights_kms_key_arn" {
  description = "KMS key ARN of the weights bucket when it uses SSE-KMS; null when it does not."
  type        = string
  default     = null

  validation {
    condition     = var.weights_kms_key_arn == null || can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.weights_kms_key_arn))
    error_message = "weights_kms_key_arn must be null or a KMS key ARN (arn:...:key/...)."
  }
}

variable "audit_bucket_arn" {
  description = "ARN of the audit bucket; the role may put objects in it, nothing else."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:s3:::[a-z0-9][a-z0-9.-]+$", var.audit_bucket_arn))
    error_message = "audit_bucket_arn must be an S3 bucket ARN."
  }
}

variable "audit_kms_key_arn" {
  description = "Key of the audit bucket (SSE-KMS needs GenerateDataKey to write)."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.audit_kms_key_arn))
    error_message = "audit_kms_key_arn must be a KMS key ARN (arn:...:key/...)."
  }
}

variable "audit_signing_key_arn" {
  description = "Asymmetric key that signs audit export manifests."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.audit_signing_key_arn))
    error_message = "audit_signing_key_arn must be a KMS key ARN (arn:...:key/...)."
  }
}

variable "queue_arn" {
  description = "ARN of the bulk jobs queue."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:sqs:[a-z0-9-]+:[0-9]{12}:.+$", var.queue_arn))
    error_message = "queue_arn must be an SQS queue ARN."
  }
}

variable "queue_kms_key_arn" {
  description = "Key of the jobs queue."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.queue_kms_key_arn))
    error_message = "queue_kms_key_arn must be a KMS key ARN (arn:...:key/...)."
  }
}

variable "secret_arns" {
  description = "Secrets the gateway reads at boot (TLS, pepper, database URL)."
  type        = list(string)

  validation {
    condition     = alltrue([for arn in var.secret_arns : can(regex("^arn:aws[a-z-]*:secretsmanager:[a-z0-9-]+:[0-9]{12}:secret:.+$", arn))])
    error_message = "secret_arns must be Secrets Manager secret ARNs."
  }
}

variable "secrets_kms_key_arn" {
  description = "Key of those secrets."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.secrets_kms_key_arn))
    error_message = "secrets_kms_key_arn must be a KMS key ARN (arn:...:key/...)."
  }
}

variable "database_resource_id" {
  description = "RDS resource id (db-...) of the control-plane database, for rds-db:connect."
  type        = string
}

variable "database_iam_user" {
  description = "Database user the gateway connects as with an IAM token."
  type        = string
}

variable "tags" {
  description = "Tags added to the roles and the instance profile."
  type        = map(string)
  default     = {}
}
