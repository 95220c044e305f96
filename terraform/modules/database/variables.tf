variable "name" {
  description = "Identifier prefix of the instance and its companions, e.g. `tacet-prod`."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,38}[a-z0-9]$", var.name)) && !can(regex("--", var.name))
    error_message = "name must be 3-40 lowercase letters, digits or single hyphens, starting with a letter (IAM role names derive from it)."
  }
}

variable "vpc_id" {
  description = "VPC of the database security group."
  type        = string
}

variable "subnet_ids" {
  description = "Private subnets in at least two zones for the DB subnet group."
  type        = list(string)

  validation {
    condition     = length(var.subnet_ids) >= 2
    error_message = "subnet_ids must list at least two subnets in different zones."
  }
}

variable "client_security_group_ids" {
  description = "Security groups (the gateway instances) allowed to connect on the PostgreSQL port."
  type        = list(string)
  default     = []
}

variable "kms_key_arn" {
  description = "Customer-managed KMS key ARN for storage, Performance Insights and the master-password secret."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.kms_key_arn))
    error_message = "kms_key_arn must be a customer-managed KMS key ARN (arn:...:key/...), not an alias or an AWS-managed key."
  }
}

variable "engine_version" {
  description = "PostgreSQL major version (minor versions are upgraded automatically)."
  type        = string
  default     = "16"

  validation {
    condition     = can(regex("^1[4-9]$", var.engine_version))
    error_message = "engine_version must be a PostgreSQL major version from 14 to 19."
  }
}

variable "instance_class" {
  description = "RDS instance class."
  type        = string
  default     = "db.r6g.large"

  validation {
    condition     = can(regex("^db\\.[a-z0-9]+\\.[a-z0-9]+$", var.instance_class))
    error_message = "instance_class must look like db.r6g.large."
  }
}

variable "allocated_storage_gb" {
  description = "Initial storage, in GiB; storage autoscaling may grow it to max_allocated_storage_gb."
  type        = number
  default     = 50
}

variable "max_allocated_storage_gb" {
  description = "Upper bound of storage autoscaling, in GiB."
  type        = number
  default     = 200

  validation {
    condition     = var.max_allocated_storage_gb >= var.allocated_storage_gb
    error_message = "max_allocated_storage_gb must be at least allocated_storage_gb."
  }
}

variable "multi_az" {
  description = "Keep a synchronous standby in a second zone."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "Refuse to delete the instance until this is turned off."
  type        = bool
  default     = true
}

variable "backup_retention_days" {
  description = "Days of automated backups (1-35); backups hold control-plane metadata only."
  type        = number
  default     = 7

  validation {
    condition     = var.backup_retention_days >= 1 && var.backup_retention_days <= 35
    error_message = "backup_retention_days must be between 1 and 35."
  }
}

variable "database_name" {
  description = "Name of the database created on the instance."
  type        = string
  default     = "tacet"
}

variable "master_username" {
  description = "Master user; its password is generated and kept in Secrets Manager by RDS, never in Terraform state."
  type        = string
  default     = "tacet_admin"
}

variable "iam_database_user" {
  description = "Database user the gateway connects as with an IAM authentication token."
  type        = string
  default     = "tacet_gateway"
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
