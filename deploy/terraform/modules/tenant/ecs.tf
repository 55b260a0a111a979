# The daemons: N replicas of the same container with the same ledger URL (the fleet spreads
# sharded runs over them and takes over a dead one's shards). Each task first copies the
# tenant's configs from its bucket prefix into a task volume (an init container), then runs
# `datafactory serve` as the image's non-root user with a read-only root file system.

resource "aws_ecs_cluster" "tenant" {
  name = local.name
  setting {
    name  = "containerInsights"
    value = "enabled"
  }
  tags = local.tags
}

locals {
  configs_dir = "/etc/datafactory/configs"
  # the init container: the tenant's configs prefix -> the configs volume. It runs as root
  # because Fargate's task volumes start root-owned: it also hands the state volume to the
  # daemon's user (10001) and opens /tmp; then it exits and the daemon starts as 10001.
  configs_init = {
    name                   = "configs"
    image                  = "public.ecr.aws/aws-cli/aws-cli:2.22.35"
    essential              = false
    user                   = "0"
    readonlyRootFilesystem = true
    entryPoint             = ["/bin/sh", "-c"]
    command = [join(" && ", [
      "aws s3 sync --only-show-errors s3://${aws_s3_bucket.tenant.id}/${var.configs_prefix} ${local.configs_dir}",
      "chown 10001 /var/lib/datafactory",
      "chmod 1777 /tmp",
    ])]
    environment = [{ name = "HOME", value = "/tmp" }]
    mountPoints = [
      { sourceVolume = "configs", containerPath = local.configs_dir, readOnly = false },
      { sourceVolume = "state", containerPath = "/var/lib/datafactory", readOnly = false },
      { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
    ]
  }
  secrets = [
    { name = "DATAFACTORY_TOKEN", valueFrom = aws_secretsmanager_secret.admin_token.arn },
    { name = "DATAFACTORY_STATE_KEY", valueFrom = aws_secretsmanager_secret.state_key.arn },
    { name = "PGPASSWORD", valueFrom = "${local.ledger_secret_arn}:password::" },
  ]
  environment = concat(
    [
      { name = "DATAFACTORY_LEDGER", value = local.ledger_url },
      { name = "DATAFACTORY_CONFIGS", value = local.configs_dir },
      { name = "DATAFACTORY_STATE_DIR", value = "/var/lib/datafactory/state" },
      { name = "DATAFACTORY_DATA_ROOT", value = "/var/lib/datafactory/data" },
      { name = "AWS_REGION", value = local.region },
    ],
    var.kafka_bootstrap == null ? [] : [{ name = "DATAFACTORY_KAFKA_BOOTSTRAP", value = var.kafka_bootstrap }],
  )
  mounts = [
    { sourceVolume = "configs", containerPath = local.configs_dir, readOnly = true },
    { sourceVolume = "state", containerPath = "/var/lib/datafactory", readOnly = false },
    { sourceVolume = "tmp", containerPath = "/tmp", readOnly = false },
  ]
}

# The two task definitions, one shape: the init step, then the image as user 10001 with a
# read-only root file system. The daemon serves; a batch task writes one shard (the state
# machine overrides its command per shard).
locals {
  tasks = {
    daemon = {
      cpu    = var.cpu
      memory = var.memory
      logs   = aws_cloudwatch_log_group.daemon.name
      main = {
        command      = ["serve"]
        portMappings = [{ containerPort = local.port, protocol = "tcp" }]
        environment = concat(local.environment, [
          { name = "DATAFACTORY_LISTEN", value = "0.0.0.0:${local.port}" },
          { name = "DATAFACTORY_WORKERS", value = tostring(var.workers) },
          { name = "DATAFACTORY_RUN", value = join(",", var.start_runs) },
        ])
        secrets = local.secrets
        healthCheck = {
          command     = ["CMD", "python", "-c", "import urllib.request as u; u.urlopen('http://127.0.0.1:${local.port}/healthz', timeout=2)"]
          interval    = 30
          timeout     = 5
          retries     = 3
          startPeriod = 30
        }
        stopTimeout = 60 # SIGTERM drains the runs to a checkpoint
      }
    }
    batch = {
      cpu    = var.batch_cpu
      memory = var.batch_memory
      logs   = aws_cloudwatch_log_group.batch.name
      main = {
        command     = ["batch", "--help"]
        environment = local.environment
        secrets     = [for s in local.secrets : s if s.name == "PGPASSWORD"]
      }
    }
  }
}

resource "aws_ecs_task_definition" "task" {
  for_each                 = local.tasks
  family                   = "${local.name}-${each.key}"
  requires_compatibilities = ["FARGATE"]
  network_mode             = "awsvpc"
  cpu                      = each.value.cpu
  memory                   = each.value.memory
  execution_role_arn       = aws_iam_role.execution.arn
  task_role_arn            = aws_iam_role.task.arn
  runtime_platform {
    operating_system_family = "LINUX"
    cpu_architecture        = "X86_64"
  }
  dynamic "volume" {
    for_each = ["configs", "state", "tmp"]
    content {
      name = volume.value
    }
  }
  container_definitions = jsonencode([
    merge(local.configs_init, {
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = each.value.logs
          awslogs-region        = local.region
          awslogs-stream-prefix = "configs"
        }
      }
    }),
    merge({
      name                   = local.container
      image                  = var.image
      essential              = true
      user                   = "10001"
      readonlyRootFilesystem = true
      dependsOn              = [{ containerName = "configs", condition = "SUCCESS" }]
      mountPoints            = local.mounts
      logConfiguration = {
        logDriver = "awslogs"
        options = {
          awslogs-group         = each.value.logs
          awslogs-region        = local.region
          awslogs-stream-prefix = each.key
        }
      }
    }, each.value.main),
  ])
  tags = local.tags
}

resource "aws_ecs_service" "daemon" {
  name                               = "${local.name}-daemon"
  cluster                            = aws_ecs_cluster.tenant.id
  task_definition                    = aws_ecs_task_definition.task["daemon"].arn
  desired_count                      = var.daemons
  launch_type                        = "FARGATE"
  platform_version                   = "LATEST"
  propagate_tags                     = "SERVICE"
  enable_ecs_managed_tags            = true
  health_check_grace_period_seconds  = 60
  deployment_minimum_healthy_percent = 50
  deployment_maximum_percent         = 200
  deployment_circuit_breaker {
    enable   = true
    rollback = true
  }
  network_configuration {
    subnets          = var.private_subnet_ids
    security_groups  = [aws_security_group.tasks.id]
    assign_public_ip = false
  }
  load_balancer {
    target_group_arn = aws_lb_target_group.api.arn
    container_name   = local.container
    container_port   = local.port
  }
  depends_on = [aws_lb_listener.https]
  tags       = local.tags
}

# The key that signs the runs' saved states: every daemon of the fleet needs the same one.
ephemeral "random_password" "state_key" {
  length  = 64
  special = false
}

resource "aws_secretsmanager_secret" "state_key" {
  #checkov:skip=CKV2_AWS_57:a new key would make the saved states of live runs unreadable; rotate between runs by bumping admin_token_version
  name_prefix             = "${local.name}-state-key-"
  description             = "Key that authenticates ${var.tenant}'s saved run states (shared by its daemons)."
  kms_key_id              = aws_kms_key.tenant.arn
  recovery_window_in_days = 7
  tags                    = local.tags
}

resource "aws_secretsmanager_secret_version" "state_key" {
  secret_id                = aws_secretsmanager_secret.state_key.id
  secret_string_wo         = ephemeral.random_password.state_key.result
  secret_string_wo_version = var.admin_token_version
}
