variable "name" {
  description = "Prefix of every resource name, e.g. `tacet-prod`."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,30}[a-z0-9]$", var.name))
    error_message = "name must be 3-32 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "cidr_block" {
  description = "IPv4 range of the VPC (a /16 to /22); private subnets are cut from its first half, public ones from its second half."
  type        = string
  default     = "10.40.0.0/16"

  validation {
    condition     = can(cidrhost(var.cidr_block, 0)) && tonumber(split("/", var.cidr_block)[1]) >= 16 && tonumber(split("/", var.cidr_block)[1]) <= 22
    error_message = "cidr_block must be an IPv4 CIDR between /16 and /22."
  }
}

variable "availability_zones" {
  description = "Availability zones to spread subnets over (2 to 8), e.g. [\"us-east-1a\", \"us-east-1b\"]."
  type        = list(string)

  validation {
    condition     = length(var.availability_zones) >= 2 && length(var.availability_zones) <= 8 && length(distinct(var.availability_zones)) == length(var.availability_zones)
    error_message = "availability_zones must list 2 to 8 distinct zones: the gateway group and the database span zones."
  }
}

variable "public_load_balancer" {
  description = "Create public subnets and an internet gateway for an internet-facing load balancer; false keeps the VPC fully private (PrivateLink or peering)."
  type        = bool
  default     = true
}

variable "interface_endpoints" {
  description = "AWS services reached through interface endpoints; instances have no other way out (no NAT)."
  type        = set(string)
  default     = ["kms", "ssm", "ssmmessages", "ec2messages", "sqs", "sts", "secretsmanager", "logs"]

  validation {
    condition     = alltrue([for s in var.interface_endpoints : can(regex("^[a-z0-9][a-z0-9.-]*$", s))])
    error_message = "interface_endpoints must be service short names such as \"kms\" or \"ecr.api\"."
  }
}

variable "flow_logs_kms_key_arn" {
  description = "Customer-managed KMS key ARN that encrypts the VPC flow log group."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.flow_logs_kms_key_arn))
    error_message = "flow_logs_kms_key_arn must be a customer-managed KMS key ARN (arn:...:key/...), not an alias."
  }
}

variable "flow_logs_retention_days" {
  description = "Retention of the VPC flow log group, in days (at least 365)."
  type        = number
  default     = 365

  validation {
    condition     = contains([365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653], var.flow_logs_retention_days)
    error_message = "flow_logs_retention_days must be a CloudWatch Logs retention of at least 365 days (365, 400, 545, 731, 1096, 1827, 2192, 2557, 2922, 3288, 3653)."
  }
}

variable "tags" {
  description = "Tags added to every resource."
  type        = map(string)
  default     = {}
}
