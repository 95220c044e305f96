variable "name" {
  description = "Prefix of every resource name, e.g. `tacet-prod` (target group names allow 32 characters, so at most 24)."
  type        = string

  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,22}[a-z0-9]$", var.name))
    error_message = "name must be 3-24 characters of lowercase letters, digits and hyphens, starting with a letter."
  }
}

variable "vpc_id" {
  description = "VPC of the instances and the load balancer."
  type        = string
}

variable "vpc_cidr_block" {
  description = "IPv4 range of the VPC: instances may reach endpoints and the database inside it."
  type        = string

  validation {
    condition     = can(cidrhost(var.vpc_cidr_block, 0))
    error_message = "vpc_cidr_block must be an IPv4 CIDR."
  }
}

variable "private_subnet_ids" {
  description = "Private subnets (no public route) in at least two zones for the Auto Scaling group."
  type        = list(string)

  validation {
    condition     = length(var.private_subnet_ids) >= 2
    error_message = "private_subnet_ids must list subnets in at least two zones."
  }
}

variable "load_balancer_subnet_ids" {
  description = "Subnets of the load balancer: public subnets when internet_facing, else private ones."
  type        = list(string)

  validation {
    condition     = length(var.load_balancer_subnet_ids) >= 1
    error_message = "load_balancer_subnet_ids must list at least one subnet."
  }
}

variable "internet_facing" {
  description = "Give the load balancer public addresses; false makes it internal."
  type        = bool
  default     = true
}

variable "allowed_client_cidrs" {
  description = "IPv4 ranges of member systems allowed to reach port 443 of the load balancer."
  type        = list(string)
  default     = ["0.0.0.0/0"]

  validation {
    condition     = length(var.allowed_client_cidrs) > 0 && alltrue([for c in var.allowed_client_cidrs : can(cidrhost(c, 0))])
    error_message = "allowed_client_cidrs must list at least one IPv4 CIDR."
  }
}

variable "s3_prefix_list_id" {
  description = "Prefix list of S3 (from the gateway endpoint), the only S3 destination of instance egress."
  type        = string

  validation {
    condition     = can(regex("^pl-[0-9a-z]+$", var.s3_prefix_list_id))
    error_message = "s3_prefix_list_id must be a prefix list id (pl-...)."
  }
}

variable "ami_id" {
  description = "Golden AMI with the NVIDIA driver, CUDA, Tacet and the host baseline baked in (instances have no internet)."
  type        = string

  validation {
    condition     = can(regex("^ami-[0-9a-f]{8,17}$", var.ami_id))
    error_message = "ami_id must be an AMI id (ami-...)."
  }
}

variable "instance_types" {
  description = "GPU instance types the group may launch, in order of preference (g5, g6, g6e, p4d, p4de, p5, p5e, p5en families)."
  type        = list(string)
  default     = ["g6e.xlarge", "g6e.2xlarge"]

  validation {
    condition     = length(var.instance_types) > 0 && alltrue([for t in var.instance_types : can(regex("^(g5|g6|g6e|p4d|p4de|p5|p5e|p5en)\\.[0-9]*x?large$", t))])
    error_message = "instance_types must be GPU instance types of the g5, g6, g6e, p4d, p4de, p5, p5e or p5en families (e.g. g6e.xlarge)."
  }
}

variable "single_engine" {
  description = "Run one engine per host instead of one per GPU. Then only single-GPU instance types are accepted: on a multi-GPU type all GPUs but one would be paid for and idle."
  type        = bool
  default     = false

  validation {
    condition     = !var.single_engine || alltrue([for t in var.instance_types : local.gpus_per_instance[t] == 1])
    error_message = "single_engine = true runs one engine on one GPU: instance_types may hold only single-GPU types (g5/g6/g6e up to 16xlarge, p5.4xlarge), not 4- or 8-GPU ones."
  }
}

variable "min_size" {
  description = "Fewest instances in the group."
  type        = number
  default     = 2
}

variable "max_size" {
  description = "Most instances in the group."
  type        = number
  default     = 4
}

variable "desired_capacity" {
  description = "Instances to start with (between min_size and max_size)."
  type        = number
  default     = 2

  validation {
    condition     = var.min_size <= var.desired_capacity && var.desired_capacity <= var.max_size
    error_message = "desired_capacity must lie between min_size and max_size."
  }
}

variable "instance_profile_name" {
  description = "Instance profile of the gateway role."
  type        = string
}

variable "autoscaling_service_role_arn" {
  description = "Service-linked role the group launches instances with (allowed to use the EBS key)."
  type        = string
}

variable "ebs_kms_key_arn" {
  description = "Customer-managed KMS key ARN that encrypts the root volume."
  type        = string

  validation {
    condition     = can(regex("^arn:aws[a-z-]*:kms:[a-z0-9-]+:[0-9]{12}:key/", var.ebs_kms_key_arn))
    error_message = "ebs_kms_key_arn must be a customer-managed KMS key ARN (arn:...:key/...), not an alias or an AWS-managed key."
  }
}

variable "root_volume_size_gb" {
  description = "Size of the encrypted root volume, in GiB."
  type        = number
  default     = 200
}

variable "root_device_name" {
  description = "Root device name of the AMI (/dev/sda1 on Ubuntu, /dev/xvda on Amazon Linux)."
  type        = string
  default     = "/dev/sda1"
}

variable "imds_http_tokens" {
  description = "Instance metadata token setting. Exists so that an attempt to loosen it fails loudly: only \"required\" (IMDSv2 only) is accepted."
  type        = string
  default     = "required"

  validation {
    condition     = var.imds_http_tokens == "required"
    error_message = "imds_http_tokens must be \"required\": IMDSv1 cannot be enabled on gateway instances."
  }
}

variable "imds_hop_limit" {
  description = "Instance metadata PUT response hop limit. Only 1 is accepted, so that nothing behind the host (a container) can reach the instance credentials."
  type        = number
  default     = 1

  validation {
    condition     = var.imds_hop_limit == 1
    error_message = "imds_hop_limit must be 1: a larger hop limit lets containers on the host reach the instance credentials."
  }
}

variable "gateway_port" {
  description = "Port on which the gateway terminates TLS on the instance."
  type        = number
  default     = 8443

  validation {
    condition     = var.gateway_port >= 1024 && var.gateway_port <= 65535
    error_message = "gateway_port must be an unprivileged port (1024-65535)."
  }
}

variable "health_check_path" {
  description = "HTTPS path the load balancer polls on the gateway port."
  type        = string
  default     = "/readyz"
}

variable "enable_deletion_protection" {
  description = "Refuse to delete the load balancer until this is turned off."
  type        = bool
  default     = true
}

variable "tacet_version" {
  description = "Tacet release the instances run (passed to cloud-init)."
  type        = string
}

variable "weights_s3_uri" {
  description = "s3://bucket/prefix of the model directory (passed to cloud-init)."
  type        = string
}

variable "tls_secret_arn" {
  description = "Secret with the TLS certificate and key (passed to cloud-init)."
  type        = string
}

variable "pepper_secret_arn" {
  description = "Secret with the API-key pepper (passed to cloud-init)."
  type        = string
}

variable "database_url_secret_arn" {
  description = "Secret with the PostgreSQL URL (passed to cloud-init)."
  type        = string
}

variable "audit_bucket" {
  description = "Name of the audit bucket (passed to cloud-init)."
  type        = string
}

variable "audit_signing_key_arn" {
  description = "Asymmetric KMS key that signs audit manifests (passed to cloud-init)."
  type        = string
}

variable "queue_url" {
  description = "URL of the bulk jobs queue (passed to cloud-init)."
  type        = string
}

variable "user_data_template_path" {
  description = "cloud-init template to render; null uses infra/cloud-init/gateway.yaml.tftpl of this repository."
  type        = string
  default     = null
}

variable "systemd_units_dir" {
  description = "Folder whose *.service files are passed to the template as `units`; null uses infra/systemd of this repository."
  type        = string
  default     = null
}

variable "tags" {
  description = "Tags added to every resource and propagated to instances."
  type        = map(string)
  default     = {}
}
