// Package auth owns users, their passwords and permissions, and the SASL mechanisms AMQP
// clients log in with, matching RabbitMQ's internal authentication backend: salted SHA-256
// password hashes (rabbit_password_hashing_sha256), loopback-only users (guest), and
// configure/write/read permission regexps per vhost, with RabbitMQ's refusal texts.
//
// Apart from Store, which guards its users with a mutex, everything here is pure.
package auth
