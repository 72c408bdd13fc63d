package rabbitmq

// SenderOptions is the former name of SenderConfig.
//
// Deprecated: use SenderConfig.
type SenderOptions = SenderConfig

// SubscriberOptions is the former name of SubscriberConfig.
//
// Deprecated: use SubscriberConfig.
type SubscriberOptions = SubscriberConfig
