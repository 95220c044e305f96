# Production: every module wired together in one US region.

data "aws_caller_identity" "current" {}

# Zones are looked up from a closed list of names, so a zone AWS adds later never shifts the
# subnets of an existing deployment.
data "aws_availability_zones" "candidates" {
  state = "available"

  filter {
    name   = "zone-name"
    values = coalesce(var.availability_zones, [for suffix in ["a", "b", "c", "d", "e", "f"] : "${var.region}${suffix}"])
  }

  lifecycle {
    postcondition {
      condition     = length(self.names) >= local.zone_count
      error_message = "Fewer available zones than requested; set availability_zones or lower availability_zone_count."
    }
  }
}

locals {
  us_regions         = ["us-east-1", "us-east-2", "us-west-1", "us-west-2"]
  zone_count         = var.availability_zones == null ? var.availability_zone_count : length(var.availability_zones)
  availability_zones = slice(sort(data.aws_availability_zones.candidates.names), 0, local.zone_count)
  audit_bucket_name  = coalesce(var.audit_bucket_name, "${var.name}-audit-${data.aws_caller_identity.current.account_id}-${var.region}")
}

module "region_guard" {
  source = "../../modules/region_guard"

  allowed_regions = local.us_regions
  create_policy   = var.create_region_scp
  target_ids      = var.region_scp_target_ids
}

module "kms" {
  source = "../../modules/kms"

  name                  = var.name
  ebs_service_role_arns = [module.iam.autoscaling_service_role_arn]
}

module "network" {
  source = "../../modules/network"

  name                  = var.name
  cidr_block            = var.vpc_cidr_block
  availability_zones    = local.availability_zones
  public_load_balancer  = true
  flow_logs_kms_key_arn = module.kms.key_arns["logs"]
}

module "audit_store" {
  source = "../../modules/audit_store"

  bucket_name             = local.audit_bucket_name
  environment             = "prod"
  retention_days          = var.audit_retention_days
  kms_key_arn             = module.kms.key_arns["audit"]
  writer_vpc_endpoint_ids = [module.network.s3_endpoint_id]
}

module "queue" {
  source = "../../modules/queue"

  name        = var.name
  kms_key_arn = module.kms.key_arns["queue"]
}

module "secrets" {
  source = "../../modules/secrets"

  name        = var.name
  kms_key_arn = module.kms.key_arns["secrets"]
}

module "database" {
  source = "../../modules/database"

  name                      = var.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.gateway.instance_security_group_id]
  kms_key_arn               = module.kms.key_arns["database"]
  instance_class            = var.db_instance_class
  multi_az                  = true
  deletion_protection       = true
}

module "iam" {
  source = "../../modules/iam"

  name                  = var.name
  weights_s3_uri        = var.weights_s3_uri
  weights_kms_key_arn   = var.weights_kms_key_arn
  audit_bucket_arn      = module.audit_store.bucket_arn
  audit_kms_key_arn     = module.kms.key_arns["audit"]
  audit_signing_key_arn = module.kms.audit_signing_key_arn
  queue_arn             = module.queue.queue_arn
  queue_kms_key_arn     = module.kms.key_arns["queue"]
  secret_arns           = values(module.secrets.secret_arns)
  secrets_kms_key_arn   = module.kms.key_arns["secrets"]
  database_resource_id  = module.database.resource_id
  database_iam_user     = module.database.iam_database_user
}

module "gateway" {
  source = "../../modules/gateway"

  name                         = var.name
  vpc_id                       = module.network.vpc_id
  vpc_cidr_block               = module.network.vpc_cidr_block
  private_subnet_ids           = module.network.private_subnet_ids
  load_balancer_subnet_ids     = module.network.public_subnet_ids
  internet_facing              = true
  allowed_client_cidrs         = var.allowed_client_cidrs
  s3_prefix_list_id            = module.network.s3_prefix_list_id
  ami_id                       = var.ami_id
  instance_types               = var.instance_types
  single_engine                = var.single_engine
  min_size                     = var.min_size
  max_size                     = var.max_size
  desired_capacity             = var.desired_capacity
  instance_profile_name        = module.iam.instance_profile_name
  autoscaling_service_role_arn = module.iam.autoscaling_service_role_arn
  ebs_kms_key_arn              = module.kms.key_arns["ebs"]
  enable_deletion_protection   = true

  tacet_version           = var.tacet_version
  weights_s3_uri          = var.weights_s3_uri
  tls_secret_arn          = module.secrets.tls_secret_arn
  pepper_secret_arn       = module.secrets.pepper_secret_arn
  database_url_secret_arn = module.secrets.database_url_secret_arn
  audit_bucket            = module.audit_store.bucket_name
  audit_signing_key_arn   = module.kms.audit_signing_key_arn
  queue_url               = module.queue.queue_url
}

# --- account-wide defaults of this region (CIS 2.2.1, 5.6/5.7) ----------------------------

resource "aws_ebs_encryption_by_default" "this" {
  count   = var.manage_account_defaults ? 1 : 0
  enabled = true
}

resource "aws_ec2_instance_metadata_defaults" "this" {
  count = var.manage_account_defaults ? 1 : 0

  http_tokens                 = "required"
  http_put_response_hop_limit = 1
}

resource "aws_ec2_serial_console_access" "this" {
  count   = var.manage_account_defaults ? 1 : 0
  enabled = false
}
