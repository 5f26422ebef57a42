"""The client side: the Flower ClientApp and the on-device state of its users."""
