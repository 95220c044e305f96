variable "name" {
  description = "Name of the service control policy."
  type        = string
  default     = "tacet-us-regions-only"
}

variable "allowed_regions" {
  description = "Regions where requests stay allowed; every other region is denied. US regions only."
  type        = list(string)
  default     = ["us-east-1", "us-east-2", "us-west-1", "us-west-2"]

  validation {
    condition     = length(var.allowed_regions) > 0 && alltrue([for r in var.allowed_regions : contains(["us-east-1", "us-east-2", "us-west-1", "us-west-2"], r)])
    error_message = "allowed_regions must list US regions only: us-east-1, us-east-2, us-west-1, us-west-2."
  }
}

variable "global_service_actions" {
  description = "Actions of global services (served from us-east-1 whatever the caller's region) left out of the deny."
  type        = list(string)
  default = [
    "account:*",
    "budgets:*",
    "ce:*",
    "cloudfront:*",
    "globalaccelerator:*",
    "health:*",
    "iam:*",
    "organizations:*",
    "route53:*",
    "route53domains:*",
    "shield:*",
    "sts:*",
    "support:*",
    "trustedadvisor:*",
  ]
}

variable "exempt_principal_arns" {
  description = "Principals (a break-glass role) the deny does not apply to; ARN patterns allowed."
  type        = list(string)
  default     = []
}

variable "create_policy" {
  description = "Create the policy in AWS Organizations (run from the management account); false only renders the document."
  type        = bool
  default     = false
}

variable "target_ids" {
  description = "Organization root, OU or account ids to attach the policy to when create_policy is true."
  type        = list(string)
  default     = []
}

variable "tags" {
  description = "Tags added to the policy."
  type        = map(string)
  default     = {}
}
