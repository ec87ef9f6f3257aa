from django.db import models


class Account(models.Model):
    email = models.TextField(unique=True)
    welcomed = models.BooleanField(default=False)
