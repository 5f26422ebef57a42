"""Framework-free core: data, models, metrics, local training. No Flower imports."""
