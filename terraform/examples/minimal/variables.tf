variable "region" {
  description = "AWS region; US regions only."
  type        = string
  default     = "us-east-2"

  validation {
    condition     = contains(["us-east-1", "us-east-2", "us-west-1", "us-west-2"], var.region)
    error_message = "region must be one of the allowed US regions: us-east-1, us-east-2, us-west-1, us-west-2."
  }
}

variable "allowed_account_ids" {
  description = "The AWS account ids this example may touch."
  type        = list(string)

  validation {
    condition     = length(var.allowed_account_ids) > 0 && alltrue([for id in var.allowed_account_ids : can(regex("^[0-9]{12}$", id))])
    error_message = "allowed_account_ids must list at least one 12-digit AWS account id."
  }
}

variable "ami_id" {
  description = "Golden GPU AMI (NVIDIA driver, CUDA, Tacet, host baseline)."
  type        = string
}

variable "tacet_version" {
  description = "Tacet release the instance runs."
  type        = string
}

variable "weights_s3_uri" {
  description = "s3://bucket/prefix of the model directory."
  type        = string
}
