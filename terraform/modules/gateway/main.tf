# GPU gateway hosts behind a Network Load Balancer. TLS passes through the load balancer (TCP)
# and ends in the gateway on the instance, so no AWS component ever sees plaintext. Instances
# have no public address, no key pair, IMDSv2 only, encrypted root volumes and no hibernation
# (which would write memory, and so request content, to disk).

data "aws_region" "current" {}

locals {
  us_regions     = ["us-east-1", "us-east-2", "us-west-1", "us-west-2"]
  listener_port  = 443
  postgres_port  = 5432
  required_units = ["tacet-engine@.service", "tacet-gateway.service", "tacet-worker.service"]

  # GPUs per instance type (README: which types fit which model size). Each GPU runs one engine
  # (tacet-engine@N) holding a whole copy of the model: data parallel, no tensor parallelism.
  gpus_per_instance = {
    for t in var.instance_types : t => (
      can(regex("^(p4d|p4de|p5e|p5en)\\.", t)) ? 8 :
      t == "p5.48xlarge" ? 8 :
      can(regex("^p5\\.", t)) ? 1 :
      can(regex("\\.(12|24)xlarge$", t)) ? 4 :
      can(regex("\\.48xlarge$", t)) ? 8 : 1
    )
  }
  # auto: one engine per GPU found at boot; single_engine: exactly one.
  host_engines = var.single_engine ? "1" : "auto"

  # Contract with infra/: the template and the unit files live there, next to the host baseline.
  template_path = coalesce(var.user_data_template_path, "${path.module}/../../../infra/cloud-init/gateway.yaml.tftpl")
  units_dir     = coalesce(var.systemd_units_dir, "${path.module}/../../../infra/systemd")
  units         = { for f in fileset(local.units_dir, "*.service") : f => file("${local.units_dir}/${f}") }

  user_data = templatefile(local.template_path, {
    region                  = data.aws_region.current.name
    gateway_port            = var.gateway_port
    allowed_cidrs           = local.host_allowed_cidrs
    tls_secret_arn          = var.tls_secret_arn
    pepper_secret_arn       = var.pepper_secret_arn
    database_url_secret_arn = var.database_url_secret_arn
    audit_bucket            = var.audit_bucket
    audit_signing_key_arn   = var.audit_signing_key_arn
    queue_url               = var.queue_url
    weights_s3_uri          = var.weights_s3_uri
    tacet_version           = var.tacet_version
    engines                 = local.host_engines
    units                   = local.units
  })

  # The load balancer preserves client addresses, so the host firewall must admit the member
  # ranges as well as the VPC (health checks); the security group still admits only the NLB.
  host_allowed_cidrs = distinct(concat(var.allowed_client_cidrs, [var.vpc_cidr_block]))

  # EC2 caps user data at 16 KiB before base64; the rendered template is over 20 KiB (unit
  # files included), so it is sent gzip-compressed, which cloud-init unpacks.
  user_data_b64 = base64gzip(local.user_data)
}

# --- security groups -----------------------------------------------------------------------

resource "aws_security_group" "load_balancer" {
  name        = "${var.name}-nlb"
  description = "Gateway load balancer: TCP 443 from member systems"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-nlb" })
}

resource "aws_vpc_security_group_ingress_rule" "load_balancer_https" {
  count = length(var.allowed_client_cidrs)

  security_group_id = aws_security_group.load_balancer.id
  description       = "TLS passthrough from member systems"
  ip_protocol       = "tcp"
  from_port         = local.listener_port
  to_port           = local.listener_port
  cidr_ipv4         = var.allowed_client_cidrs[count.index]
}

resource "aws_vpc_security_group_egress_rule" "load_balancer_to_instances" {
  security_group_id            = aws_security_group.load_balancer.id
  description                  = "Forward to the gateway port of the instances"
  ip_protocol                  = "tcp"
  from_port                    = var.gateway_port
  to_port                      = var.gateway_port
  referenced_security_group_id = aws_security_group.instance.id
}

resource "aws_security_group" "instance" {
  name        = "${var.name}-gateway"
  description = "Gateway instances: the gateway port from the load balancer only"
  vpc_id      = var.vpc_id

  tags = merge(var.tags, { Name = "${var.name}-gateway" })
}

resource "aws_vpc_security_group_ingress_rule" "instance_from_load_balancer" {
  security_group_id            = aws_security_group.instance.id
  description                  = "Gateway port from the load balancer (traffic and health checks)"
  ip_protocol                  = "tcp"
  from_port                    = var.gateway_port
  to_port                      = var.gateway_port
  referenced_security_group_id = aws_security_group.load_balancer.id
}

resource "aws_vpc_security_group_egress_rule" "instance_to_endpoints" {
  security_group_id = aws_security_group.instance.id
  description       = "HTTPS to the interface endpoints inside the VPC"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  cidr_ipv4         = var.vpc_cidr_block
}

resource "aws_vpc_security_group_egress_rule" "instance_to_s3" {
  security_group_id = aws_security_group.instance.id
  description       = "HTTPS to S3 through the gateway endpoint"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  prefix_list_id    = var.s3_prefix_list_id
}

resource "aws_vpc_security_group_egress_rule" "instance_to_database" {
  security_group_id = aws_security_group.instance.id
  description       = "PostgreSQL inside the VPC"
  ip_protocol       = "tcp"
  from_port         = local.postgres_port
  to_port           = local.postgres_port
  cidr_ipv4         = var.vpc_cidr_block
}

# --- instances -----------------------------------------------------------------------------

resource "aws_launch_template" "this" {
  name                                 = "${var.name}-gateway"
  description                          = "Tacet gateway ${var.tacet_version}"
  image_id                             = var.ami_id
  ebs_optimized                        = true
  instance_initiated_shutdown_behavior = "terminate"
  update_default_version               = true
  user_data                            = local.user_data_b64

  iam_instance_profile {
    name = var.instance_profile_name
  }

  metadata_options {
    http_endpoint               = "enabled"
    http_tokens                 = var.imds_http_tokens
    http_put_response_hop_limit = var.imds_hop_limit
    http_protocol_ipv6          = "disabled"
    instance_metadata_tags      = "disabled"
  }

  block_device_mappings {
    device_name = var.root_device_name

    ebs {
      volume_size           = var.root_volume_size_gb
      volume_type           = "gp3"
      encrypted             = true
      kms_key_id            = var.ebs_kms_key_arn
      delete_on_termination = true
    }
  }

  network_interfaces {
    associate_public_ip_address = false
    delete_on_termination       = true
    security_groups             = [aws_security_group.instance.id]
  }

  hibernation_options {
    configured = false
  }

  monitoring {
    enabled = true
  }

  tag_specifications {
    resource_type = "instance"
    tags          = merge(var.tags, { Name = "${var.name}-gateway" })
  }

  tag_specifications {
    resource_type = "volume"
    tags          = merge(var.tags, { Name = "${var.name}-gateway" })
  }

  tags = var.tags

  lifecycle {
    precondition {
      condition     = contains(local.us_regions, data.aws_region.current.name)
      error_message = "Gateway instances must run in a US region (us-east-1, us-east-2, us-west-1, us-west-2)."
    }
    precondition {
      condition     = alltrue([for u in local.required_units : contains(keys(local.units), u)])
      error_message = "The systemd units folder must hold tacet-gateway.service, tacet-engine@.service and tacet-worker.service."
    }
    precondition {
      condition     = ceil(length(local.user_data_b64) * 3 / 4) <= 16384
      error_message = "The compressed cloud-init user data exceeds the 16 KiB EC2 limit."
    }
  }
}

resource "aws_autoscaling_group" "this" {
  name                      = "${var.name}-gateway"
  vpc_zone_identifier       = var.private_subnet_ids
  min_size                  = var.min_size
  max_size                  = var.max_size
  desired_capacity          = var.desired_capacity
  health_check_type         = "ELB"
  health_check_grace_period = 900 # loading model weights from S3 takes minutes
  target_group_arns         = [aws_lb_target_group.this.arn]
  service_linked_role_arn   = var.autoscaling_service_role_arn
  capacity_rebalance        = false
  wait_for_capacity_timeout = "0"

  mixed_instances_policy {
    instances_distribution {
      on_demand_base_capacity                  = 0
      on_demand_percentage_above_base_capacity = 100
      on_demand_allocation_strategy            = "prioritized"
    }

    launch_template {
      launch_template_specification {
        launch_template_id = aws_launch_template.this.id
        version            = aws_launch_template.this.latest_version
      }

      dynamic "override" {
        for_each = var.instance_types
        content {
          instance_type = override.value
        }
      }
    }
  }

  instance_refresh {
    strategy = "Rolling"
    preferences {
      min_healthy_percentage = 50
    }
  }

  dynamic "tag" {
    for_each = merge(var.tags, { Name = "${var.name}-gateway" })
    content {
      key                 = tag.key
      value               = tag.value
      propagate_at_launch = true
    }
  }
}

# --- load balancer -------------------------------------------------------------------------

resource "aws_lb" "this" {
  #checkov:skip=CKV_AWS_91:NLB access logs exist only for TLS listeners; this listener is TCP passthrough so TLS ends in the gateway.
  name                             = "${var.name}-nlb"
  load_balancer_type               = "network"
  internal                         = !var.internet_facing
  subnets                          = var.load_balancer_subnet_ids
  security_groups                  = [aws_security_group.load_balancer.id]
  enable_cross_zone_load_balancing = true
  enable_deletion_protection       = var.enable_deletion_protection

  tags = var.tags
}

resource "aws_lb_target_group" "this" {
  name                 = "${var.name}-gateway"
  port                 = var.gateway_port
  protocol             = "TCP"
  target_type          = "instance"
  vpc_id               = var.vpc_id
  preserve_client_ip   = true
  deregistration_delay = 120

  health_check {
    protocol            = "HTTPS"
    port                = "traffic-port"
    path                = var.health_check_path
    matcher             = "200"
    healthy_threshold   = 3
    unhealthy_threshold = 3
    interval            = 30
  }

  tags = var.tags
}

resource "aws_lb_listener" "this" {
  #checkov:skip=CKV_AWS_2:TCP on purpose: TLS 1.3 ends in the gateway on the instance, never on the load balancer.
  #checkov:skip=CKV_AWS_103:TCP passthrough: the load balancer does not terminate TLS, so it has no TLS policy to set.
  load_balancer_arn = aws_lb.this.arn
  port              = local.listener_port
  protocol          = "TCP"

  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.this.arn
  }

  tags = var.tags
}
