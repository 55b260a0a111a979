# Who may talk to what: the tenant's CIDRs to the load balancer (HTTPS only), the load balancer
# to the daemons, the daemons to the ledger, to AWS APIs over HTTPS and to an existing Kafka.

resource "aws_security_group" "lb" {
  name_prefix = "${local.name}-lb-"
  description = "${var.tenant} Data Factory load balancer: HTTPS from the tenant's networks"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "lb_https" {
  for_each          = toset(var.allowed_cidrs)
  security_group_id = aws_security_group.lb.id
  description       = "HTTPS from ${each.value}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "lb_to_daemons" {
  security_group_id            = aws_security_group.lb.id
  description                  = "to the daemons' API"
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  tags                         = local.tags
}

resource "aws_security_group" "tasks" {
  name_prefix = "${local.name}-tasks-"
  description = "${var.tenant} Data Factory daemons and batch tasks"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "daemons_from_lb" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "the API from the load balancer"
  referenced_security_group_id = aws_security_group.lb.id
  ip_protocol                  = "tcp"
  from_port                    = local.port
  to_port                      = local.port
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "tasks_https" {
  security_group_id = aws_security_group.tasks.id
  description       = "AWS APIs (S3, Kinesis, Secrets Manager, ECR, logs) over HTTPS"
  cidr_ipv4         = "0.0.0.0/0"
  ip_protocol       = "tcp"
  from_port         = 443
  to_port           = 443
  tags              = local.tags
}

resource "aws_vpc_security_group_egress_rule" "tasks_ledger" {
  security_group_id            = aws_security_group.tasks.id
  description                  = "the ledger (PostgreSQL)"
  referenced_security_group_id = aws_security_group.ledger.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  tags                         = local.tags
}

resource "aws_vpc_security_group_egress_rule" "tasks_kafka" {
  for_each          = toset(var.kafka_cidrs)
  security_group_id = aws_security_group.tasks.id
  description       = "the tenant's Kafka brokers in ${each.value}"
  cidr_ipv4         = each.value
  ip_protocol       = "tcp"
  from_port         = var.kafka_port
  to_port           = var.kafka_port
  tags              = local.tags
}

resource "aws_security_group" "ledger" {
  name_prefix = "${local.name}-ledger-"
  description = "${var.tenant} Data Factory ledger: PostgreSQL from the tenant's tasks"
  vpc_id      = var.vpc_id
  tags        = local.tags
}

resource "aws_vpc_security_group_ingress_rule" "ledger_from_tasks" {
  security_group_id            = aws_security_group.ledger.id
  description                  = "PostgreSQL from the daemons and batch tasks"
  referenced_security_group_id = aws_security_group.tasks.id
  ip_protocol                  = "tcp"
  from_port                    = 5432
  to_port                      = 5432
  tags                         = local.tags
}

# -- the API and console behind HTTPS ---------------------------------------------------------

resource "aws_lb" "api" {
  #checkov:skip=CKV2_AWS_28:WAF is the tenant organisation's (one web ACL across its load balancers); ingress is limited to allowed_cidrs and every mutating call needs the token
  #checkov:skip=CKV_AWS_91:access logs need a log bucket the organisation owns (and its bucket policy for the ELB account); the daemon logs every API call itself
  name_prefix                = substr(var.tenant, 0, 6)
  internal                   = var.internal
  load_balancer_type         = "application"
  subnets                    = var.load_balancer_subnet_ids
  security_groups            = [aws_security_group.lb.id]
  drop_invalid_header_fields = true
  enable_deletion_protection = var.deletion_protection
  tags                       = local.tags
}

resource "aws_lb_target_group" "api" {
  #checkov:skip=CKV_AWS_378:TLS ends at the load balancer; from there to the daemon is inside the VPC, in the tasks' security group only
  name_prefix = substr(var.tenant, 0, 6)
  port        = local.port
  protocol    = "HTTP"
  target_type = "ip"
  vpc_id      = var.vpc_id
  health_check {
    path                = "/healthz"
    matcher             = "200"
    interval            = 15
    healthy_threshold   = 2
    unhealthy_threshold = 3
  }
  deregistration_delay = 30
  tags                 = local.tags
}

resource "aws_lb_listener" "https" {
  load_balancer_arn = aws_lb.api.arn
  port              = 443
  protocol          = "HTTPS"
  ssl_policy        = "ELBSecurityPolicy-TLS13-1-2-2021-06"
  certificate_arn   = var.certificate_arn
  default_action {
    type             = "forward"
    target_group_arn = aws_lb_target_group.api.arn
  }
  tags = local.tags
}
