package nats

// SenderOptions is the former name of SenderConfig.
//
// Deprecated: use SenderConfig.
type SenderOptions = SenderConfig

// SubscriberOptions is the former name of SubscriberConfig.
//
// Deprecated: use SubscriberConfig.
type SubscriberOptions = SubscriberConfig

// PublisherOptions is the former name of PublisherConfig.
//
// Deprecated: use PublisherConfig.
type PublisherOptions = PublisherConfig

// ErrInvalidOptions is the former name of ErrInvalidConfig.
//
// Deprecated: use ErrInvalidConfig.
var ErrInvalidOptions = ErrInvalidConfig
