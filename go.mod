module github.com/parleymq/parley

go 1.26

require (
	github.com/rabbitmq/amqp091-go v1.16.0 // indirect
	go.uber.org/multierr v1.10.0 // indirect
	go.uber.org/zap v1.28.0 // indirect
	gopkg.in/yaml.v3 v3.0.1 // indirect
)
