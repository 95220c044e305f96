# The smallest complete deployment, for a development account: one g6.xlarge, a single-zone
# database without deletion protection, audit exports under Object Lock GOVERNANCE (so the
# bucket can be emptied with s3:BypassGovernanceRetention), a short retention.

data "aws_caller_identity" "current" {}
data "aws_availability_zones" "candidates" {
  state = "available"

  filter {
    name   = "zone-name"
    values = ["${var.region}a", "${var.region}b", "${var.region}c"]
  }
}

locals {
  name = "tacet-dev"
}

module "kms" {
  source = "../../modules/kms"

  name                    = local.name
  deletion_window_in_days = 7
  ebs_service_role_arns   = [module.iam.autoscaling_service_role_arn]
}

module "network" {
  source = "../../modules/network"

  name                  = local.name
  availability_zones    = slice(sort(data.aws_availability_zones.candidates.names), 0, 2)
  flow_logs_kms_key_arn = module.kms.key_arns["logs"]
}

module "audit_store" {
  source = "../../modules/audit_store"

  bucket_name             = "${local.name}-audit-${data.aws_caller_identity.current.account_id}-${var.region}"
  environment             = "dev"
  retention_days          = 7
  kms_key_arn             = module.kms.key_arns["audit"]
  writer_vpc_endpoint_ids = [module.network.s3_endpoint_id]
}

module "queue" {
  source = "../../modules/queue"

  name        = local.name
  kms_key_arn = module.kms.key_arns["queue"]
}

module "secrets" {
  source = "../../modules/secrets"

  name                    = local.name
  kms_key_arn             = module.kms.key_arns["secrets"]
  recovery_window_in_days = 7
}

module "database" {
  source = "../../modules/database"

  name                      = local.name
  vpc_id                    = module.network.vpc_id
  subnet_ids                = module.network.private_subnet_ids
  client_security_group_ids = [module.gateway.instance_security_group_id]
  kms_key_arn               = module.kms.key_arns["database"]
  instance_class            = "db.t4g.medium"
  multi_az                  = false
  deletion_protection       = false
}

module "iam" {
  source = "../../modules/iam"

  name                  = local.name
  weights_s3_uri        = var.weights_s3_uri
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

  name                         = local.name
  vpc_id                       = module.network.vpc_id
  vpc_cidr_block               = module.network.vpc_cidr_block
  private_subnet_ids           = module.network.private_subnet_ids
  load_balancer_subnet_ids     = module.network.public_subnet_ids
  s3_prefix_list_id            = module.network.s3_prefix_list_id
  ami_id                       = var.ami_id
  instance_types               = ["g6.xlarge"]
  min_size                     = 1
  max_size                     = 1
  desired_capacity             = 1
  instance_profile_name        = module.iam.instance_profile_name
  autoscaling_service_role_arn = module.iam.autoscaling_service_role_arn
  ebs_kms_key_arn              = module.kms.key_arns["ebs"]
  enable_deletion_protection   = false

  tacet_version           = var.tacet_version
  weights_s3_uri          = var.weights_s3_uri
  tls_secret_arn          = module.secrets.tls_secret_arn
  pepper_secret_arn       = module.secrets.pepper_secret_arn
  database_url_secret_arn = module.secrets.database_url_secret_arn
  audit_bucket            = module.audit_store.bucket_name
  audit_signing_key_arn   = module.kms.audit_signing_key_arn
  queue_url               = module.queue.queue_url
}
