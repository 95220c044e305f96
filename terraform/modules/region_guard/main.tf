# An optional service control policy that denies every request outside the allowed US regions,
# so that even a principal with broad IAM rights cannot create resources (or copy data) abroad.
# The variable validation of each root stops Terraform itself; this stops everyone else.

locals {
  condition = merge(
    { StringNotEquals = { "aws:RequestedRegion" = var.allowed_regions } },
    length(var.exempt_principal_arns) == 0 ? {} : { ArnNotLike = { "aws:PrincipalARN" = var.exempt_principal_arns } },
  )

  policy_json = jsonencode({
    Version = "2012-10-17"
    Statement = [{
      Sid       = "DenyOutsideAllowedUsRegions"
      Effect    = "Deny"
      NotAction = var.global_service_actions
      Resource  = "*"
      Condition = local.condition
    }]
  })
}

resource "aws_organizations_policy" "this" {
  count = var.create_policy ? 1 : 0

  name        = var.name
  description = "Deny requests outside ${join(", ", var.allowed_regions)}"
  type        = "SERVICE_CONTROL_POLICY"
  content     = local.policy_json

  tags = var.tags
}

resource "aws_organizations_policy_attachment" "this" {
  count = var.create_policy ? length(var.target_ids) : 0

  policy_id = aws_organizations_policy.this[0].id
  target_id = var.target_ids[count.index]
}
