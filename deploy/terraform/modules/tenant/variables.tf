# -- who ------------------------------------------------------------------------------------

variable "tenant" {
  description = "The tenant's short name: every resource's name starts with it (lowercase letters, digits, hyphens)."
  type        = string
  validation {
    condition     = can(regex("^[a-z][a-z0-9-]{1,20}$", var.tenant))
    error_message = "tenant: 2 to 21 lowercase letters, digits or hyphens, starting with a letter."
  }
}

variable "run_owner" {
  description = "Who owns the tenant's runs (a team or a person): the run-owner tag."
  type        = string
}

variable "cost_centre" {
  description = "The cost-centre tag on every resource."
  type        = string
}

variable "tags" {
  description = "More tags for every resource."
  type        = map(string)
  default     = {}
}

# -- where ----------------------------------------------------------------------------------

variable "vpc_id" {
  description = "The VPC the tenant's daemons, ledger and load balancer live in."
  type        = string
}

variable "private_subnet_ids" {
  description = "Subnets (at least two, in different zones) for the daemons, the batch tasks and the ledger."
  type        = list(string)
}

variable "load_balancer_subnet_ids" {
  description = "Subnets of the load balancer in front of the API and console (private ones for an internal load balancer)."
  type        = list(string)
}

variable "internal" {
  description = "An internal load balancer (reachable only inside the VPC and what is peered with it); false: internet-facing, still only from allowed_cidrs."
  type        = bool
  default     = true
}

variable "allowed_cidrs" {
  description = "The only networks that may reach the API and console (HTTPS)."
  type        = list(string)
  validation {
    condition     = length(var.allowed_cidrs) > 0 && alltrue([for c in var.allowed_cidrs : can(cidrhost(c, 0)) && c != "0.0.0.0/0"])
    error_message = "allowed_cidrs: one or more CIDR blocks, and not 0.0.0.0/0."
  }
}

variable "certificate_arn" {
  description = "ACM certificate of the API's HTTPS listener."
  type        = string
}

# -- the daemon -----------------------------------------------------------------------------

variable "image" {
  description = "The Data Factory image (the repository's Dockerfile), by digest for reproducible deploys."
  type        = string
}

variable "daemons" {
  description = "How many daemons (ECS tasks) share the tenant's runs: sharded runs spread over them."
  type        = number
  default     = 2
  validation {
    condition     = var.daemons >= 1 && var.daemons <= 50
    error_message = "daemons: 1 to 50."
  }
}

variable "cpu" {
  description = "Fargate CPU units per daemon (1024 = one vCPU)."
  type        = number
  default     = 2048
}

variable "memory" {
  description = "Fargate memory per daemon, MiB."
  type        = number
  default     = 4096
}

variable "workers" {
  description = "Worker processes per daemon for a run's shards (DATAFACTORY_WORKERS)."
  type        = number
  default     = 1
}

variable "configs_prefix" {
  description = "Prefix in the tenant's bucket holding its run configs (NAME.yaml); each task copies it to /etc/datafactory/configs when it starts."
  type        = string
  default     = "configs/"
}

variable "start_runs" {
  description = "Named configs each daemon starts at startup unless a run of them is live (DATAFACTORY_RUN)."
  type        = list(string)
  default     = []
}

variable "log_retention_days" {
  description = "Days the daemons' and state machine's logs are kept."
  type        = number
  default     = 365
}

# -- the ledger -----------------------------------------------------------------------------

variable "ledger_url" {
  description = "An existing PostgreSQL for the ledger (postgresql://USER@HOST:PORT/DB, no password); null: the module creates one (RDS)."
  type        = string
  default     = null
}

variable "ledger_password_secret_arn" {
  description = "With ledger_url: the Secrets Manager secret holding the password (a JSON with a password key)."
  type        = string
  default     = null
}

variable "ledger_instance_class" {
  description = "The RDS instance class of a created ledger."
  type        = string
  default     = "db.t4g.small"
}

variable "ledger_multi_az" {
  description = "A created ledger in two zones."
  type        = bool
  default     = true
}

variable "deletion_protection" {
  description = "The created ledger cannot be deleted while this is true (set false before a teardown)."
  type        = bool
  default     = true
}

# -- targets --------------------------------------------------------------------------------

variable "kinesis_streams" {
  description = "The tenant's Kinesis streams (name suffix => shard count; 0: on-demand)."
  type        = map(number)
  default     = {}
}

variable "kinesis_retention_hours" {
  description = "How long the streams keep records."
  type        = number
  default     = 24
}

variable "ephemeral_prefix" {
  description = "Prefix of the bucket's ephemeral test data (expired after ephemeral_days)."
  type        = string
  default     = "ephemeral/"
}

variable "ephemeral_days" {
  description = "Days after which objects under ephemeral_prefix are deleted."
  type        = number
  default     = 14
}

variable "bucket_versioning" {
  description = "Keep object versions in the tenant's bucket (costs storage; protects against overwrites)."
  type        = bool
  default     = false
}

variable "kafka_bootstrap" {
  description = "An existing Kafka for the tenant's stream runs (host:port,...): given to the daemons as DATAFACTORY_KAFKA_BOOTSTRAP, for configs to use as ${DATAFACTORY_KAFKA_BOOTSTRAP}. null: none."
  type        = string
  default     = null
}

variable "kafka_cidrs" {
  description = "Where the existing Kafka's brokers are: the daemons may reach them there, on kafka_port, and nowhere else."
  type        = list(string)
  default     = []
}

variable "kafka_port" {
  description = "The existing Kafka's listener port."
  type        = number
  default     = 9092
}

# -- batch ----------------------------------------------------------------------------------

variable "batch_cpu" {
  description = "Fargate CPU units of a batch shard task."
  type        = number
  default     = 2048
}

variable "batch_memory" {
  description = "Fargate memory of a batch shard task, MiB."
  type        = number
  default     = 4096
}

variable "batch_max_concurrency" {
  description = "Shard tasks a batch runs at once."
  type        = number
  default     = 10
}

variable "batch_max_attempts" {
  description = "Retries of a failed shard task (with exponential backoff from 30 s)."
  type        = number
  default     = 3
}

variable "data_prefix" {
  description = "The bucket prefix the tenant's runs and batches may write under (\"\": the whole bucket, which is the tenant's alone)."
  type        = string
  default     = ""
}

variable "image_repository_arn" {
  description = "The ECR repository of var.image, for the tasks to pull from (null: a public registry)."
  type        = string
  default     = null
}
